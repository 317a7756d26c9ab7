"""Planned switchover and failback on the lab with the workload client writing through
DNS: no acknowledged write lost, never two writable primaries."""

from __future__ import annotations

import asyncio

from fleet.dr import DrOutcome, DrRequest, OpKind
from tests.conftest import RunningWorker
from tests.dr.support import run, seed_app, writable

EU, US = "eu-prod-1", "us-prod-1"


async def test_switchover_loses_no_write(worker: RunningWorker, lab, onboarded_fleet) -> None:
    app = await seed_app(lab, worker, [EU, US])
    client = lab.admin.start_workload(app.name)
    await asyncio.sleep(1.0)
    _, result = await run(worker, OpKind.SWITCHOVER, DrRequest(app=app.name))
    await asyncio.sleep(2.5)  # the client's DNS cache (TTL 1 s) moves to the new primary
    measured = lab.admin.stop_workload(client)
    p = result.progress
    assert p.outcome == DrOutcome.SUCCEEDED, p.reason
    assert (p.source, p.target) == (EU, US)
    assert [s.ok for s in p.steps] == [True] * len(p.steps)
    m = p.measurements[0]
    assert m.rpo_bytes == 0 and m.rto_seconds is not None
    assert measured["verified"] and measured["lostCount"] == 0, measured
    assert measured["dualPrimaryProbes"] == 0
    assert measured["ackedBy"].get(US, 0) > 0
    assert writable(lab, app.name) == [US]
    print(f"switchover RTO {m.rto_seconds:.2f}s (client {measured['rtoSeconds']:.2f}s)")
    for s in p.steps:
        assert s.finished_at is not None
        print(f"  {s.name}: {(s.finished_at - s.started_at).total_seconds():.2f}s {s.detail}")
