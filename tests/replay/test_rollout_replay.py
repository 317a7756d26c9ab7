"""Replays the recorded rollout histories (Rollout, K8sUpgrade, AddonUpgrade) with the
current workflow code; re-record with test_rollout_record.py (see its docstring)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.rollout_support import SCRIPTED
from worker import WORKFLOWS
from workflows.registry import OPERATIONS

HISTORIES = Path(__file__).parent / "histories"
RECORDED = [
    "Rollout-controls-run1",
    "Rollout-controls-run2",
    "Rollout-k8s",
    "Rollout-addon-rollback",
    "K8sUpgrade",
    "AddonUpgrade-failed",
    "AddonUpgrade-undo",
    "PlanCheck",
]


@pytest.mark.parametrize("name", RECORDED)
async def test_replay_rollout_history(name: str) -> None:
    path = HISTORIES / f"{name}.json"
    assert path.exists(), f"no recorded history {name}; re-record (see test_rollout_record.py)"
    history = WorkflowHistory.from_json(name, path.read_text())
    if SCRIPTED not in OPERATIONS:  # the engine histories ran the scripted test kind
        OPERATIONS.add(SCRIPTED)
    children = [operation.child for operation in OPERATIONS]
    replayer = Replayer(workflows=WORKFLOWS + children, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
