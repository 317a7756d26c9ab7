"""Replays a rollout that emitted events (both runs, across continue-as-new) and its
EventRelay with the current code; re-record with test_record_events.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.rollout_support import register_scripted
from worker import all_workflows

HISTORIES = Path(__file__).parent / "histories"
RECORDED = ["Rollout-events-run1", "Rollout-events-run2", "EventRelay"]


async def test_replay_rollout_events_and_relay() -> None:
    histories = []
    for name in RECORDED:
        path = HISTORIES / f"{name}.json"
        assert path.exists(), f"no recorded history {name}; re-record (test_record_events.py)"
        histories.append(WorkflowHistory.from_json(name, path.read_text()))
    register_scripted()  # the rollout ran the scripted test kind (its child replays too)
    replayer = Replayer(workflows=all_workflows(), data_converter=pydantic_data_converter)

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    assert not results.replay_failures, results.replay_failures
