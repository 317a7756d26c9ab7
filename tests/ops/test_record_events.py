"""Records the histories test_replay_events.py replays. Skipped unless
FLOTILLA_RECORD_HISTORIES=1:

    FLOTILLA_RECORD_HISTORIES=1 .venv/bin/pytest tests/ops/test_record_events.py

Scenario: a rollout with a change reference that waits for an approval between its waves
(so it continues as new) and emits every kind of rollout event, and its EventRelay.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.events import EventType
from fleet.rollout_models import ApproveRequest, RolloutSpec, RunStatus
from starters import rollouts
from tests.ops.recording_sink import recording_sink
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    eventually,
    make_fleet,
    spec,
)

HISTORIES = Path(__file__).parent / "histories"

pytestmark = pytest.mark.skipif(
    os.environ.get("FLOTILLA_RECORD_HISTORIES") != "1", reason="re-records replay histories"
)


async def test_record_rollout_with_events(engine: Engine) -> None:
    selector = await make_fleet(engine, [{}, {"outcome": "fail"}])
    base = spec(selector, "canary:1,rest", approve_between=True).model_dump()
    extra = {"change": "servicenow:CHG0030001", "started_by": "alice"}
    plan = await rollouts.make_plan(engine.client, RolloutSpec.model_validate(base | extra))
    with recording_sink() as sink:
        handle = await rollouts.start_rollout(engine.client, plan, task_queue=engine.task_queue)

        async def waiting() -> bool | None:
            return any(e.type == EventType.AWAITING_APPROVAL for e in sink.of(handle.id)) or None

        await eventually(waiting)
        await handle.execute_update(
            "approve", ApproveRequest(who="bob", wave="rest"), result_type=object
        )
        assert (await handle.result()).status == RunStatus.HALTED

        async def finished() -> bool | None:
            return any(e.type == EventType.FINISHED for e in sink.of(handle.id)) or None

        await eventually(finished)
    relay = engine.client.get_workflow_handle(f"events:{handle.id}")
    await relay.terminate("recorded")  # its idle wait would last 10 minutes
    HISTORIES.mkdir(exist_ok=True)
    first = engine.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    for name, target in (
        ("Rollout-events-run1", first),
        ("Rollout-events-run2", engine.client.get_workflow_handle(handle.id)),
        ("EventRelay", relay),
    ):
        history = await target.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())
