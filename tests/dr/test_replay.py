"""Replays the recorded history of every DR workflow with the current code, so a change
that would break running DR workflows (non-determinism) fails here first. Re-record with
`FLOTILLA_RECORD_HISTORIES=1 pytest tests/dr/test_record_histories.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.registry import SUITES

HISTORIES = Path(__file__).parent / "histories"
DR = next(suite for suite in SUITES if suite.name == "dr")


@pytest.mark.parametrize("workflow", [w.__name__ for w in DR.workflows])
async def test_replay(workflow: str) -> None:
    path = HISTORIES / f"{workflow}.json"
    assert path.exists(), f"no recorded history for {workflow}; re-record (see module doc)"
    replayer = Replayer(workflows=list(DR.workflows), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))
