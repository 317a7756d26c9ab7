"""Replays recorded sync and drift histories (SyncPlan, the sync Rollout, SyncCluster
moving a workload, a DriftSweep finding a conflict, a sync Rollout asking for a prune
approval) with the current workflow code.
Re-record: FLOTILLA_RECORD_HISTORIES=1 .venv/bin/pytest tests/sync/test_sync_lab.py"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import all_workflows

HISTORIES = Path(__file__).parent / "histories"
RECORDED = [
    "SyncPlan-move",
    "Rollout-sync-move",
    "SyncCluster-move",
    "DriftSweep-conflict",
    "Rollout-sync-prune-ask",
]


@pytest.mark.parametrize("name", RECORDED)
async def test_replay_sync_history(name: str) -> None:
    path = HISTORIES / f"{name}.json"
    assert path.exists(), f"no recorded history {name}; re-record (see the module doc)"
    history = WorkflowHistory.from_json(name, path.read_text())
    replayer = Replayer(workflows=all_workflows(), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
