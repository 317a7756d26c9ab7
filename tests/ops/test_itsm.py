"""ITSM write-back against a local ServiceNow Table API that fails the first attempts of
every update (once before writing, once after writing with the answer lost): the change
still receives each update exactly once, in order, and moves Scheduled -> Implement ->
Review. Scripted children on a real dev server (no lab)."""

from __future__ import annotations

import pytest

from fleet.rollout_models import RolloutSpec, RunStatus
from starters import rollouts
from tests.ops.http_support import serving
from tests.ops.servicenow_fake import FakeServiceNow
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    eventually,
    make_fleet,
    spec,
)


async def test_change_gets_each_update_exactly_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sn = FakeServiceNow()
    sn.add_change("CHG0030001", state="-2")
    sn.add_change("CHG0030002", state="-2")  # another change: must stay untouched
    async with serving(sn.app()) as url:
        monkeypatch.setenv("FLOTILLA_SERVICENOW_URL", url)
        monkeypatch.setenv("FLOTILLA_SERVICENOW_AUTH", "env:FLOTILLA_TEST_SN_AUTH")
        monkeypatch.setenv("FLOTILLA_TEST_SN_AUTH", f"{sn.user}:{sn.password}")
        monkeypatch.setenv("FLOTILLA_UI_URL", "http://ui.example:8233")
        selector = await make_fleet(engine, [{}, {}])
        base = spec(selector, "canary:1,rest").model_dump()
        change = {"started_by": "alice", "change": "servicenow:CHG0030001"}
        rollout = RolloutSpec.model_validate(base | change)
        plan = await rollouts.make_plan(engine.client, rollout)
        handle = await rollouts.start_rollout(engine.client, plan, task_queue=engine.task_queue)
        assert (await handle.result()).status == RunStatus.COMPLETED

        async def all_noted() -> list[str] | None:
            notes = sn.notes("CHG0030001")
            return notes if any("Finished" in n for n in notes) else None

        notes = await eventually(all_noted)
    keys = [f"[flotilla {handle.id}/{n}]" for n in range(1, 5)]
    assert [n.split(" ", 2)[:2] for n in notes] == [k.split(" ") for k in keys], notes
    assert "started scripted run" in notes[0] and "by alice" in notes[0]
    assert notes[1].split("\n")[0].endswith("Wave canary started: wave 1/2: 1 clusters")
    assert "Wave rest started" in notes[2]
    assert "Finished: succeeded" in notes[3]
    link = "http://ui.example:8233/namespaces/default/workflows/" + handle.id.replace(":", "%3A")
    assert all(link in n for n in notes)
    # every note was refused once and written once (its answer lost), never written twice
    assert all(sn.attempts[n] == 2 for n in notes)
    change = next(c for c in sn.changes if c["number"] == "CHG0030001")
    assert change["state"] == "0"  # Scheduled -> Implement -> Review
    assert sn.notes("CHG0030002") == [] and not sn.refused
