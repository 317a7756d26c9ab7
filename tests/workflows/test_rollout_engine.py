"""The rollout engine on a real dev server, with scripted per-cluster children (no lab):
waves, budgets, unreachable handling, controls, membership changes, rollback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import pytest
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)

from activities.inventory import acquire_lock
from fleet.ids import cluster_id
from fleet.models import ClusterRecord, LockRequest, Phase, RetireRequest
from fleet.rollout_models import (
    ApproveRequest,
    ClusterStatus,
    ControlRequest,
    Outcome,
    RunStatus,
    SkipRequest,
    WaveStatus,
)
from starters import rollouts
from tests.workflows.rollout_support import (
    Engine,
    add_record,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    eventually,
    make_fleet,
    release,
    spec,
    start,
    status_of,
    wait_progress,
)

OK: dict[str, str] = {}
FAIL = {"outcome": "fail"}
DARK = {"outcome": "unreachable"}
HOLD = {"hold": "yes"}


async def test_three_waves_complete_with_continue_as_new(engine: Engine) -> None:
    selector = await make_fleet(engine, [OK] * 6)
    handle = await start(engine, selector, "canary:1,50%,rest", max_concurrent=2)
    report = await handle.result()
    assert report.status == RunStatus.COMPLETED, (report.halt_reason, report.outcomes[:2])
    assert [o.wave for o in report.outcomes] == ["canary"] + ["wave-2"] * 3 + ["rest"] * 2
    assert all(o.status == ClusterStatus.SUCCEEDED for o in report.outcomes)
    first = engine.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW


async def test_failing_canary_halts_before_wave_two(engine: Engine) -> None:
    selector = await make_fleet(engine, [FAIL, OK, OK])
    report = await (await start(engine, selector, "canary:1,rest")).result()
    assert report.status == RunStatus.HALTED
    assert "budget of 0" in report.halt_reason
    assert [o.status for o in report.outcomes] == [
        ClusterStatus.FAILED,
        ClusterStatus.NOT_STARTED,
        ClusterStatus.NOT_STARTED,
    ]


async def test_budget_absorbs_one_failure_and_halts_on_the_next(engine: Engine) -> None:
    selector = await make_fleet(engine, [FAIL, OK, FAIL, OK])
    handle = await start(engine, selector, "rest", max_concurrent=1, failure_budget="1")
    report = await handle.result()
    assert report.status == RunStatus.HALTED
    assert [o.status for o in report.outcomes] == [
        ClusterStatus.FAILED,
        ClusterStatus.SUCCEEDED,
        ClusterStatus.FAILED,
        ClusterStatus.NOT_STARTED,
    ]
    assert "2 failures exceed the run's budget of 1" in report.halt_reason


@pytest.mark.parametrize("skip_unreachable", [True, False])
async def test_unreachable_skipped_or_failed_by_option(
    engine: Engine, skip_unreachable: bool
) -> None:
    selector = await make_fleet(engine, [DARK, OK])
    handle = await start(engine, selector, "rest", skip_unreachable=skip_unreachable)
    report = await handle.result()
    dark, ok = report.outcomes
    assert ok.status == ClusterStatus.SUCCEEDED or not skip_unreachable
    if skip_unreachable:
        assert report.status == RunStatus.COMPLETED
        assert dark.status == ClusterStatus.UNREACHABLE and dark.reason.startswith("skipped")
    else:
        assert report.status == RunStatus.HALTED
        assert dark.status == ClusterStatus.FAILED and dark.reason.startswith("unreachable")


async def test_approval_gates_the_next_wave(engine: Engine) -> None:
    selector = await make_fleet(engine, [OK, OK])
    handle = await start(engine, selector, "canary:1,rest", approve_between=True)
    await refused(
        rollouts.control(engine.client, handle.id, "approve", ApproveRequest(who="", wave="rest")),
        "who approves",
    )
    p = await wait_progress(handle, lambda p: p.waves[1].status == WaveStatus.AWAITING_APPROVAL)
    assert status_of(p, "-01") == ClusterStatus.PENDING
    # An approval names the wave it admits: one for another wave is refused.
    await refused(
        rollouts.control(
            engine.client, handle.id, "approve", ApproveRequest(who="ana", wave="canary")
        ),
        "waits for approval of wave 'rest', not 'canary'",
    )
    await rollouts.control(
        engine.client, handle.id, "approve", ApproveRequest(who="ana", wave="rest", note="ok")
    )
    report = await handle.result()
    assert report.status == RunStatus.COMPLETED
    assert report.outcome == Outcome.SUCCEEDED
    assert [(a.wave, a.who, a.note) for a in report.approvals] == [(1, "ana", "ok")]


async def test_unanswered_approval_halts_the_run(engine: Engine) -> None:
    """No wait without a deadline: an approval that never comes halts the run."""
    selector = await make_fleet(engine, [OK, OK])
    handle = await start(
        engine, selector, "canary:1,rest", approve_between=True, approval_timeout="2s"
    )
    report = await handle.result()
    assert report.outcome == Outcome.HALTED
    assert "no approval of wave rest within 2s" in report.halt_reason
    assert [o.status for o in report.outcomes][1] == ClusterStatus.NOT_STARTED


async def test_pause_stops_new_work_until_resume(engine: Engine) -> None:
    selector = await make_fleet(engine, [HOLD, OK, OK])
    handle = await start(engine, selector, "rest", max_concurrent=1)
    await wait_progress(handle, lambda p: p.clusters[0].status == ClusterStatus.RUNNING)
    await rollouts.control(engine.client, handle.id, "pause", ControlRequest(who="bo"))
    await refused(
        rollouts.control(engine.client, handle.id, "pause", ControlRequest(who="bo")),
        "already paused",
    )
    await release(engine.client, handle.id, selector.split("=")[1] + "-00")
    # The running cluster finishes; launching would happen in the same workflow task.
    p = await wait_progress(handle, lambda p: p.clusters[0].status == ClusterStatus.SUCCEEDED)
    assert p.paused and [c.status for c in p.clusters[1:]] == [ClusterStatus.PENDING] * 2
    await rollouts.control(engine.client, handle.id, "resume", ControlRequest(who="bo"))
    report = await handle.result()
    assert report.status == RunStatus.COMPLETED
    assert [c.action for c in report.controls] == ["pause", "resume"]


async def test_skip_and_abort(engine: Engine) -> None:
    selector = await make_fleet(engine, [HOLD, OK, OK])
    suite = selector.split("=")[1]
    handle = await start(engine, selector, "rest", max_concurrent=1)
    await wait_progress(handle, lambda p: p.clusters[0].status == ClusterStatus.RUNNING)
    await refused(
        rollouts.control(engine.client, handle.id, "skip", SkipRequest(cluster=f"{suite}-00")),
        "only clusters not yet started",
    )
    await rollouts.control(
        engine.client, handle.id, "skip", SkipRequest(cluster=f"{suite}-01", who="cy", reason="x")
    )
    await rollouts.control(engine.client, handle.id, "abort", ControlRequest(who="cy"))
    await refused(
        rollouts.control(engine.client, handle.id, "abort", ControlRequest(who="cy")),
        "no controls apply",
    )
    # Abort lets the running cluster reach its end.
    await release(engine.client, handle.id, f"{suite}-00")
    report = await handle.result()
    assert report.status == RunStatus.ABORTED
    assert [o.status for o in report.outcomes] == [
        ClusterStatus.SUCCEEDED,
        ClusterStatus.SKIPPED,
        ClusterStatus.NOT_STARTED,
    ]


async def test_membership_change_mid_run(engine: Engine) -> None:
    selector = await make_fleet(engine, [HOLD, OK, OK])
    suite = selector.split("=")[1]
    handle = await start(engine, selector, "canary:1,rest")
    await wait_progress(handle, lambda p: p.clusters[0].status == ClusterStatus.RUNNING)
    await offboard_record(engine, f"{suite}-02")
    await add_record(engine, f"{suite}-99", {"suite": suite, "env": "prod"})
    await eventually(lambda: _listed(engine, selector, f"{suite}-99"))
    await release(engine.client, handle.id, f"{suite}-00")
    report = await handle.result()
    assert report.status == RunStatus.COMPLETED
    assert [o.status for o in report.outcomes] == [
        ClusterStatus.SUCCEEDED,
        ClusterStatus.SUCCEEDED,
        ClusterStatus.SKIPPED,
    ]
    assert report.left == [f"{suite}-02"] and report.joined == [f"{suite}-99"]


async def test_auto_rollback_undoes_changed_clusters_newest_first(engine: Engine) -> None:
    selector = await make_fleet(engine, [OK, OK, FAIL, OK])
    handle = await start(engine, selector, "canary:1,rest", max_concurrent=1, auto_rollback=True)
    report = await handle.result()
    assert report.status == RunStatus.ROLLED_BACK
    statuses = [o.status for o in report.outcomes]
    assert statuses == [ClusterStatus.ROLLED_BACK] * 3 + [ClusterStatus.NOT_STARTED]
    starts = [
        (
            await engine.client.get_workflow_handle(f"{handle.id}/{o.name}/rollback").describe()
        ).start_time
        for o in report.outcomes[:3]
    ]
    assert starts == sorted(starts, reverse=True)  # newest change undone first


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"waves": []}, "no waves"),
        ({"wave_clusters": []}, "has no clusters"),
        ({"options": {"max_concurrent": 0}}, "max_concurrent"),
        ({"options": {"failure_budget": "lots"}}, "failure budget 'lots'"),
    ],
)
async def test_unchecked_plan_fails_fast(engine: Engine, change: dict, reason: str) -> None:
    """Input from any Temporal client, not made by build_plan or even valid for the
    models, fails the run at once with the reason; never a workflow task retried forever."""
    selector = await make_fleet(engine, [OK])
    plan = await rollouts.make_plan(engine.client, spec(selector, "rest"))
    raw = plan.model_dump(mode="json")
    if "waves" in change:
        raw["waves"] = change["waves"]
    if "wave_clusters" in change:
        raw["waves"][0]["clusters"] = change["wave_clusters"]
    raw["spec"]["options"].update(change.get("options", {}))
    handle = await engine.client.start_workflow(
        "Rollout", {"plan": raw}, id=f"raw-{uuid.uuid4().hex[:6]}", task_queue=engine.task_queue
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 30)
    assert reason in str(failed.value.cause)


async def offboard_record(engine: Engine, name: str) -> None:
    holder = "test-offboard"
    lock = LockRequest(cluster=name, holder=holder, operation="offboard", phase=Phase.OFFBOARDING)
    await acquire_lock(engine.client, lock)
    await engine.client.get_workflow_handle(cluster_id(name)).execute_update(
        "retire", RetireRequest(cluster=name, holder=holder), result_type=ClusterRecord
    )


async def _listed(engine: Engine, selector: str, name: str) -> bool:
    from fleet.models import RecordsQuery
    from starters.inventory import list_clusters

    records = await list_clusters(engine.client, RecordsQuery(selector=selector))
    return name in {r.name for r in records}


async def refused(call: Awaitable[object], reason: str) -> None:
    """The update was rejected by its validator, for `reason`."""
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await call
    assert reason in str(failed.value.cause)
