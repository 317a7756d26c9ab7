"""A failover of a dark primary whose worker is killed (SIGKILL) at each step in turn:
a new worker resumes it every time, and it ends with exactly one writable primary, the
DNS record on it, and the old primary's fence pending (applied when it returns)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from activities.dr_observe import start_run
from activities.dr_records import get_app
from fleet.dr import DrOutcome, DrRequest, DrResult, OpKind
from tests.conftest import RunningWorker
from tests.dr.support import fenced, seed_app, wait_for, writable
from tests.workflows.core_support import unique
from tests.workflows.worker_process import spawn_worker, stop
from workflows.dr import Failover

EU, US = "eu-prod-1", "us-prod-1"
pytestmark = pytest.mark.slow  # about 90 s: a worker restart per step


async def test_failover_survives_a_worker_killed_at_each_step(
    worker: RunningWorker, lab, onboarded_fleet, tmp_path: Path
) -> None:
    app = await seed_app(lab, worker, [EU, US], start_watch=True)  # applies the fence
    queue = unique("dr-crash")
    kubeconfig = str(lab.kubeconfig)
    workers: list[subprocess.Popen[bytes]] = []

    def respawn() -> None:
        log = tmp_path / f"worker-{len(workers)}.log"
        workers.append(spawn_worker(worker.client, queue, kubeconfig=kubeconfig, log=log))

    respawn()
    lab.admin.fault(EU, "dark", mode="refuse")
    killed_at: list[str] = []
    try:
        workflow_id = f"failover:{app.name}:{unique('crash')}"
        await start_run(
            worker.client,
            OpKind.FAILOVER,
            DrRequest(app=app.name),
            workflow_id=workflow_id,
            task_queue=queue,
        )
        handle = worker.client.get_workflow_handle(workflow_id, result_type=DrResult)
        try:
            while True:
                step = await current_step(handle, seen=killed_at)
                if step is None:
                    break
                workers[-1].send_signal(signal.SIGKILL)
                workers[-1].wait()
                killed_at.append(step)
                print(f"killed at {step}", flush=True)
                respawn()
            result = await handle.result()
        finally:
            lab.admin.clear(EU, "dark")
        assert result.progress.outcome == DrOutcome.SUCCEEDED, result.progress.reason
        names = [s.name for s in result.progress.steps]
        print(f"killed at {killed_at} of {names}")
        assert len(killed_at) >= len(names) - 2, (killed_at, names)  # the quickest may slip
        state = await get_app(worker.client, app.name)
        assert state is not None and state.primary == US and state.operation is None
        assert lab.admin.resolve(app.policy.dns.dns_name)["member"] == US
        # the fence the failover left pending runs on the last worker's queue
        await wait_for(lambda: fenced(lab, app.name, EU), "EU fenced", within=15)
        assert writable(lab, app.name) == [US]
    finally:
        for process in workers:
            stop(process)


async def current_step(handle, *, seen: list[str]) -> str | None:  # type: ignore[no-untyped-def]
    """Waits until a step not yet killed is running; None when the run has ended."""
    while True:
        desc = await handle.describe()
        if desc.status is not None and desc.status.name != "RUNNING":
            return None
        try:
            progress = await asyncio.wait_for(handle.query(Failover.progress), 2)
        except Exception:
            await asyncio.sleep(0.02)
            continue
        running = [s.name for s in progress.steps if s.ok is None]
        if running and running[-1] not in seen:
            return running[-1]
        await asyncio.sleep(0.01)
