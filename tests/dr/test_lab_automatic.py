"""The automatic-failover watch on the lab: a dark primary fails over by itself (the
client's outage is the RTO); a partition only the hub sees does not; past the fleet-wide
budget the watch waits for an operator's approval."""

from __future__ import annotations

import asyncio

import pytest

from activities.dr_records import get_app
from fleet.dr import (
    ApproveFailover,
    DrOutcome,
    DrRequest,
    DrResult,
    OpKind,
    WatchSettings,
    watch_id,
)
from tests.conftest import RunningWorker
from tests.dr.support import fenced, run, seed_app, wait_for, writable
from workflows.dr_watch import DrWatch

EU, US = "eu-prod-1", "us-prod-1"
FAST = WatchSettings(interval_seconds=0.5, failure_rounds=3, probe_timeout_seconds=1.0)


async def primary_of(worker: RunningWorker, app: str) -> str:
    state = await get_app(worker.client, app)
    assert state is not None
    return state.primary


async def last_run(worker: RunningWorker, app: str) -> DrResult | None:
    state = await get_app(worker.client, app)
    assert state is not None
    if not state.runs:
        return None
    handle = worker.client.get_workflow_handle(state.runs[-1].id, result_type=DrResult)
    return await handle.result()


async def test_partition_seen_only_by_the_hub_does_not_fail_over(
    worker: RunningWorker, lab, onboarded_fleet
) -> None:
    app = await seed_app(lab, worker, [EU, US], automatic=True, watch=FAST, start_watch=True)
    await asyncio.sleep(1.0)  # the watch has seen the application healthy
    lab.admin.fault(EU, "partition")
    try:
        await asyncio.sleep(4.0)  # 8 rounds, more than failure_rounds
        watch = await worker.client.get_workflow_handle(watch_id(app.name)).query(DrWatch.state)
        # an operator's failover is refused too: EU cannot be fenced but still takes writes
        _, forced = await run(worker, OpKind.FAILOVER, DrRequest(app=app.name))
    finally:
        lab.admin.clear(EU, "partition")
    assert forced.progress.outcome == DrOutcome.FAILED
    assert "still takes writes" in forced.progress.reason
    assert watch.last_signals is not None and watch.last_signals.hub_ok is False
    assert watch.last_signals.standby_ok and watch.last_signals.client_ok
    assert "below quorum" in watch.last_decision
    assert await primary_of(worker, app.name) == EU
    assert writable(lab, app.name) == [EU]


async def test_isolated_primary_that_clients_still_reach_does_not_fail_over(
    worker: RunningWorker, lab, onboarded_fleet
) -> None:
    app = await seed_app(lab, worker, [EU, US], automatic=True, watch=FAST, start_watch=True)
    await asyncio.sleep(1.0)
    lab.admin.fault(EU, "partition", isolate=True)
    try:
        await asyncio.sleep(3.0)
        watch = await worker.client.get_workflow_handle(watch_id(app.name)).query(DrWatch.state)
    finally:
        lab.admin.clear(EU, "partition")
    assert watch.last_signals is not None
    assert (watch.last_signals.hub_ok, watch.last_signals.standby_ok) == (False, False)
    assert "clients still write" in watch.last_decision
    assert await primary_of(worker, app.name) == EU and not watch.last_started


async def test_dark_primary_fails_over_by_itself(
    worker: RunningWorker, lab, onboarded_fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_DR_MAX_AUTOMATIC", "100")
    app = await seed_app(lab, worker, [EU, US], automatic=True, watch=FAST, start_watch=True)
    client = lab.admin.start_workload(app.name)
    await asyncio.sleep(1.0)
    lab.admin.fault(EU, "dark", mode="refuse")
    try:
        await wait_for_primary(worker, app.name, US)
        result = await last_run(worker, app.name)
        await wait_for(
            lambda: lab.admin.workload(client)["ackedBy"].get(US, 0) > 0, "a write on US"
        )
    finally:
        lab.admin.clear(EU, "dark")
    assert result is not None and result.progress.outcome == DrOutcome.SUCCEEDED
    await wait_for(lambda: fenced(lab, app.name, EU), "EU fenced", within=10)
    assert writable(lab, app.name) == [US]
    measured = lab.admin.stop_workload(client)
    print(f"automatic failover: client outage {measured['rtoSeconds']:.2f}s, {measured}")
    assert measured["rtoSeconds"] < 30


async def test_past_the_budget_the_watch_waits_for_approval(
    worker: RunningWorker, lab, onboarded_fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_DR_MAX_AUTOMATIC", "0")
    app = await seed_app(lab, worker, [EU, US], automatic=True, watch=FAST, start_watch=True)
    handle = worker.client.get_workflow_handle(watch_id(app.name))
    lab.admin.fault(EU, "dark", mode="refuse")
    try:
        await wait_for_watch(worker, app.name)
        assert await primary_of(worker, app.name) == EU
        await handle.execute_update(DrWatch.approve, ApproveFailover(who="test"))
        await wait_for_primary(worker, app.name, US)
    finally:
        lab.admin.clear(EU, "dark")
    await wait_for(lambda: fenced(lab, app.name, EU), "EU fenced", within=10)
    assert writable(lab, app.name) == [US]


async def wait_for_primary(worker: RunningWorker, app: str, cluster: str) -> None:
    for _ in range(600):
        state = await get_app(worker.client, app)
        if state and state.primary == cluster and state.operation is None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{app} did not fail over to {cluster}")


async def wait_for_watch(worker: RunningWorker, app: str) -> None:
    handle = worker.client.get_workflow_handle(watch_id(app))
    for _ in range(300):
        if (await handle.query(DrWatch.state)).awaiting_approval:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the watch never asked for approval")
