"""Records the DR histories test_replay.py replays. Skipped unless
FLOTILLA_RECORD_HISTORIES=1:

    FLOTILLA_RECORD_HISTORIES=1 .venv/bin/pytest tests/dr/test_record_histories.py

One scenario on the lab runs every DR workflow: a drill, a switchover, an automatic
failover of a dark primary (the watch, the fleet-wide guard), the returning primary
fenced, and a failback.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from activities.dr_records import get_app
from fleet.dr import GUARD_ID, DrRequest, OpKind, WatchSettings, app_id, fence_id, watch_id
from tests.conftest import RunningWorker
from tests.dr.support import fenced, run, seed_app, wait_for, writable
from tests.dr.test_lab_automatic import wait_for_primary

HISTORIES = Path(__file__).parent / "histories"
EU, US = "eu-prod-1", "us-prod-1"

pytestmark = pytest.mark.skipif(
    os.environ.get("FLOTILLA_RECORD_HISTORIES") != "1", reason="re-records replay histories"
)


async def test_record_dr_histories(
    worker: RunningWorker, lab, onboarded_fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_DR_MAX_AUTOMATIC", "100")
    fast = WatchSettings(interval_seconds=0.5, failure_rounds=3, probe_timeout_seconds=1.0)
    app = await seed_app(lab, worker, [EU, US], automatic=True, watch=fast, start_watch=True)
    ids = {}
    ids["Drill"], _ = await run(worker, OpKind.DRILL, DrRequest(app=app.name))
    ids["Switchover"], _ = await run(worker, OpKind.SWITCHOVER, DrRequest(app=app.name))
    ids["Switchover-back"], _ = await run(worker, OpKind.SWITCHOVER, DrRequest(app=app.name))
    lab.admin.fault(EU, "dark", mode="refuse")
    try:
        await wait_for_primary(worker, app.name, US)
    finally:
        lab.admin.clear(EU, "dark")
    await wait_for(lambda: fenced(lab, app.name, EU), "EU fenced", within=10)
    assert writable(lab, app.name) == [US]
    await asyncio.sleep(1.5)  # the watch clears the pending fence
    state = await get_app(worker.client, app.name)
    assert state is not None
    ids["Failover"] = next(r.id for r in state.runs if r.kind == OpKind.FAILOVER)
    ids["Failback"], back = await run(worker, OpKind.FAILBACK, DrRequest(app=app.name))
    assert back.progress.outcome == "succeeded", back.progress.reason
    ids.update(DrApp=app_id(app.name), DrWatch=watch_id(app.name), DrGuard=GUARD_ID)
    ids["DrFence"] = fence_id(app.name, EU)
    HISTORIES.mkdir(exist_ok=True)
    for name, workflow_id in ids.items():
        if name == "Switchover-back":
            continue
        history = await worker.client.get_workflow_handle(workflow_id).fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())
