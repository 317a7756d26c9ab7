"""One outcome everywhere: a rollout that halted, was aborted or rolled back completes to
Temporal, but `ops watch` exits 1, `ops list`/`ops show` and the search attribute say what
happened; a multi-wave run keeps its summary after continue-as-new; per-cluster children
are found by cluster."""

from __future__ import annotations

import json

import pytest

from fleet import search
from fleet.rollout_models import ControlRequest, Outcome
from starters import rollouts
from tests.starters.conftest import ARun, assert_one_line_error
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    eventually,
    make_fleet,
    start,
    wait_progress,
)

OK, FAIL, HOLD = {}, {"outcome": "fail"}, {"hold": "yes"}


async def _listed_outcome(aflotilla: ARun, address: str, workflow_id: str) -> str | None:
    result = await aflotilla("ops", "list", "-o", "json", address=address)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    row = next((r for r in rows if r["id"] == workflow_id), None)
    return str(row["outcome"]) if row and row["status"] == "COMPLETED" else None


@pytest.mark.parametrize("ending", ["halted", "aborted", "rolled-back"])
async def test_unsuccessful_rollouts_never_read_as_success(
    engine: Engine, aflotilla: ARun, temporal_address: str, ending: str
) -> None:
    if ending == "aborted":
        selector = await make_fleet(engine, [HOLD, OK])
        handle = await start(engine, selector, "rest", max_concurrent=1)
        await wait_progress(handle, lambda p: p.clusters[0].status.value == "running")
        await rollouts.control(engine.client, handle.id, "abort", ControlRequest(who="t"))
        await engine.client.get_workflow_handle(f"{handle.id}/{selector[6:]}-00").signal("release")
    else:
        selector = await make_fleet(engine, [OK, FAIL, OK])
        handle = await start(
            engine, selector, "rest", max_concurrent=1, auto_rollback=ending == "rolled-back"
        )
    report = await handle.result()
    assert report.outcome.value == ending
    watch = await aflotilla("ops", "watch", handle.id, address=temporal_address)
    line = assert_one_line_error(watch, 1)
    assert f"{handle.id} {ending}" in line
    assert ending in watch.stdout and "COMPLETED" not in watch.stdout
    listed = await eventually(lambda: _listed_outcome(aflotilla, temporal_address, handle.id))
    assert listed == ending
    description = await handle.describe()
    assert description.typed_search_attributes.get(search.OUTCOME) == ending


async def test_multi_wave_run_keeps_summary_and_children_are_found_by_cluster(
    engine: Engine, aflotilla: ARun, temporal_address: str
) -> None:
    selector = await make_fleet(engine, [OK, OK, OK])
    handle = await start(engine, selector, "canary:1,1,rest")
    report = await handle.result()
    assert report.outcome == Outcome.SUCCEEDED
    shown = await aflotilla("ops", "show", handle.id, "-o", "json", address=temporal_address)
    op = json.loads(shown.stdout)
    assert op["summary"].startswith("Rollout of scripted change to new to 3 clusters"), op
    assert op["outcome"] == "succeeded"
    assert op["details"].startswith("succeeded: scripted change to new on 3 clusters")
    watch = await aflotilla("ops", "watch", handle.id, address=temporal_address)
    assert watch.returncode == 0, watch.stderr
    last = f"{selector[6:]}-02"
    query = f"{search.CLUSTERS.name} = '{last}' AND {search.KIND.name} = 'rollout:scripted/cluster'"

    async def children() -> list[str] | None:
        found = [w.id async for w in engine.client.list_workflows(query)]
        return found or None

    assert await eventually(children) == [f"{handle.id}/{last}"]
    kinds = await aflotilla(
        "ops", "list", "--kind", "rollout:addon/cluster", "-o", "json", address=temporal_address
    )
    assert kinds.returncode == 0, kinds.stderr
