"""Unplanned failover of a dark primary on the lab: RPO and RTO as the workload client
measured them, the returning old primary fenced before it takes a write, then failback
home with no write lost."""

from __future__ import annotations

import asyncio

from activities.dr_records import get_app
from fleet.dr import DrOutcome, DrRequest, OpKind, WatchSettings
from tests.conftest import RunningWorker
from tests.dr.support import fenced, run, seed_app, wait_for, writable

EU, US = "eu-prod-1", "us-prod-1"
FAST = WatchSettings(interval_seconds=0.5, failure_rounds=3, probe_timeout_seconds=1.0)


async def test_failover_of_a_dark_primary_then_failback(
    worker: RunningWorker, lab, onboarded_fleet
) -> None:
    app = await seed_app(lab, worker, [EU, US], watch=FAST, start_watch=True)
    client = lab.admin.start_workload(app.name)
    await asyncio.sleep(1.5)
    lab.admin.fault(EU, "dark", mode="refuse")
    try:
        await wait_for_down(worker, app.name)  # the watch records it (a manual failover)
        _, result = await run(worker, OpKind.FAILOVER, DrRequest(app=app.name))
        p = result.progress
        assert p.outcome == DrOutcome.SUCCEEDED, p.reason
        fence = next(s for s in p.steps if s.name == f"fence {EU}")
        assert "fence pending" in fence.detail
        await asyncio.sleep(2.5)  # DNS TTL 1 s: the client writes to US
        measured = lab.admin.workload(client)
    finally:
        lab.admin.clear(EU, "dark")
    m = p.measurements[0]
    print(f"failover RTO {m.rto_seconds}s RPO {m.rpo_bytes}B/{m.rpo_seconds}s; client {measured}")
    assert m.rto_seconds is not None and abs(m.rto_seconds - measured["rtoSeconds"]) <= 1.0
    # the returning old primary is fenced by the watch before it takes a write
    await wait_for(lambda: fenced(lab, app.name, EU), "EU fenced", within=10)
    assert writable(lab, app.name) == [US]
    measured = lab.admin.stop_workload(client)
    dual_primary = measured["dualPrimaryProbes"]
    assert measured["ackedBy"].get(EU, 0) > 0 and measured["ackedBy"].get(US, 0) > 0
    lost_seconds = measured["lostCount"] * 0.02
    assert m.rpo_seconds is None or abs(m.rpo_seconds - lost_seconds) <= 1.0

    # failback: rebuild EU from US, catch up, switch over home; no write lost
    client = lab.admin.start_workload(app.name)
    await asyncio.sleep(1.0)
    _, back = await run(worker, OpKind.FAILBACK, DrRequest(app=app.name))
    assert back.progress.outcome == DrOutcome.SUCCEEDED, back.progress.reason
    await asyncio.sleep(2.5)
    measured = lab.admin.stop_workload(client)
    assert measured["verified"] and measured["lostCount"] == 0, measured
    assert measured["dualPrimaryProbes"] == 0
    assert writable(lab, app.name) == [EU]
    assert dual_primary == 0, "the returning old primary took writes before its fence"


async def wait_for_down(worker: RunningWorker, app: str) -> None:
    for _ in range(300):
        state = await get_app(worker.client, app)
        if state is not None and state.health.down:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the watch never recorded the primary down")
