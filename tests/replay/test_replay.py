"""Replay every recorded history under histories/ with the current workflow code, so a
change that breaks running workflows (non-determinism) fails here first.

Re-record with `FLOTILLA_RECORD_HISTORIES=1 pytest tests/replay/test_record.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"
# Workflows of the platform core; each must have a recorded history.
CORE = ["ClusterEntity", "ClusterIdentity", "Onboard", "Offboard", "FleetHealthSweep"]


def history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


@pytest.mark.parametrize("workflow_type", CORE)
async def test_replay(workflow_type: str) -> None:
    path = HISTORIES / f"{workflow_type}.json"
    assert path.exists(), f"no recorded history for {workflow_type}; re-record (see module doc)"
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history(path))
