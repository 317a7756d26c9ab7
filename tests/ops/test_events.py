"""The events seam on a real dev server: a rollout's events reach a sink in order, once
each, keyed `<workflow_id>/<seq>` across continue-as-new (scripted children, no lab)."""

from __future__ import annotations

from fleet.events import EventType
from fleet.rollout_models import ApproveRequest, RunStatus
from tests.ops.recording_sink import recording_sink
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    eventually,
    make_fleet,
    start,
)


async def test_halted_rollout_events_in_order_once_each(engine: Engine) -> None:
    selector = await make_fleet(engine, [{"outcome": "fail"}, {}, {}])
    with recording_sink() as sink:
        handle = await start(engine, selector, "canary:1,rest")
        report = await handle.result()
        assert report.status == RunStatus.HALTED

        async def all_in() -> list[EventType] | None:
            types = [e.type for e in sink.of(handle.id)]
            return types if EventType.FINISHED in types else None

        types = await eventually(all_in)
    assert types == [
        EventType.STARTED,
        EventType.WAVE_STARTED,
        EventType.HALTED,
        EventType.FINISHED,
    ]
    got = sink.of(handle.id)
    assert [e.key for e in got] == [f"{handle.id}/{n}" for n in range(1, 5)]
    assert got[-1].outcome == "halted" and got[1].wave == "canary"


async def test_approval_events_survive_continue_as_new(engine: Engine) -> None:
    selector = await make_fleet(engine, [{}, {}])
    with recording_sink() as sink:
        handle = await start(engine, selector, "canary:1,rest", approve_between=True)

        async def waiting() -> bool | None:
            return any(e.type == EventType.AWAITING_APPROVAL for e in sink.of(handle.id)) or None

        await eventually(waiting)
        await handle.execute_update(
            "approve", ApproveRequest(who="alice", wave="rest"), result_type=object
        )
        report = await handle.result()
        assert report.status == RunStatus.COMPLETED

        async def finished() -> bool | None:
            return any(e.type == EventType.FINISHED for e in sink.of(handle.id)) or None

        await eventually(finished)
    got = sink.of(handle.id)
    assert [e.type for e in got] == [
        EventType.STARTED,
        EventType.WAVE_STARTED,
        EventType.AWAITING_APPROVAL,
        EventType.WAVE_APPROVED,
        EventType.WAVE_STARTED,
        EventType.FINISHED,
    ]
    assert len({e.key for e in got}) == len(got)
    assert got[3].principal == "alice" and got[-1].outcome == "succeeded"
