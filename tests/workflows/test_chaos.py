"""Chaos: a Kubernetes upgrade rolled across 20 lab clusters while the worker is SIGKILLed
six times and the Temporal dev server is stopped and started again (same port, same
SQLite file). The run must end as if nothing had happened: every cluster succeeded,
each cluster's KubeadmControlPlane and MachineDeployment written exactly once (their
generation up by one), no record left locked, one child run per cluster.

The disruptions are tied to progress (the number of children started), not to a clock, so
each lands while children are in the middle of their activities (the lab's clusters answer
slowly) wherever the run is in its waves. Every wait has a deadline."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from fleet.k8s_target import K8sTarget
from fleet.rollout_models import ClusterStatus, RolloutReport, RunStatus
from tests.conftest import RunningWorker
from tests.workflows.chaos_support import DevServer, Workers, retrying, until
from tests.workflows.core_support import unique
from tests.workflows.test_rollout_lab import NEW, assert_unlocked, start, suite_clusters, versions
from tests.workflows.test_rollout_worker_crash import generations

pytestmark = pytest.mark.slow

CLUSTERS = 20
WAVES = "canary:2,50%,rest"  # 2, 9, 9 clusters
# (steps, disruption): a step is a child started or a child finished (40 in all); each
# disruption is a SIGKILL of the worker or a restart of the dev server.
PLAN = [
    (2, "kill"),
    (6, "kill"),
    (10, "kill"),
    (15, "restart"),
    (20, "kill"),
    (24, "kill"),
    (28, "kill"),
]
MIN_GAP = 2  # steps between two disruptions, so each worker has done some work
LATENCY_MS = 150  # every workload-cluster API call, so kills land mid-activity
CHAOS_DEADLINE = 600.0  # seconds for all disruptions to have happened
RESULT_DEADLINE = 600.0  # seconds for the run to finish after the last one


async def steps(client: Client, rollout_id: str) -> int:
    """Children started plus children finished so far (visibility lags by a moment)."""
    children = f'WorkflowType = "K8sUpgrade" AND WorkflowId STARTS_WITH "{rollout_id}/"'
    started = await client.count_workflows(children)
    finished = await client.count_workflows(f'{children} AND ExecutionStatus != "Running"')
    return started.count + finished.count


async def disrupt(
    client: Client, server: DevServer, workers: Workers, handle: WorkflowHandle, log: list[str]
) -> None:
    """Works through PLAN: each disruption fires once the run has made its number of
    steps and MIN_GAP more than at the previous disruption."""
    begun = time.monotonic()
    last = 0
    for threshold, action in PLAN:
        needed = max(threshold, last + MIN_GAP)

        async def reached(needed: int = needed) -> bool:
            await workers.ensure_alive()
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                raise AssertionError(f"the run ended before the disruption at {needed}: {log}")
            return await steps(client, handle.id) >= needed

        await until(reached, deadline=CHAOS_DEADLINE, what=f"{needed} steps")
        last = await retrying(lambda: steps(client, handle.id), what="steps")
        at = f"{time.monotonic() - begun:5.1f}s, step {last:2d}"
        if action == "kill":
            await workers.kill()
            log.append(f"{at}: SIGKILLed worker {workers.spawned - 1}, started {workers.spawned}")
        else:
            server.stop()
            await asyncio.sleep(2)
            await server.start()
            await workers.ensure_alive()
            log.append(f"{at}: restarted the dev server (workers died alone: {workers.died})")


async def child_runs(client: Client, workflow_id: str) -> list[Any]:
    """Runs of `workflow_id`, leaving out runs that continued as new."""
    return [
        r
        async for r in client.list_workflows(f'WorkflowId = "{workflow_id}"')
        if r.status != WorkflowExecutionStatus.CONTINUED_AS_NEW
    ]


async def retried_activities(client: Client, workflow_id: str) -> list[str]:
    """Activities of a child that ran more than once (their first attempt interrupted)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return [
        names[e.activity_task_started_event_attributes.scheduled_event_id]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.attempt > 1
    ]


async def test_rollout_survives_worker_kills_and_a_server_restart(tmp_path: Path) -> None:
    from lab.testing import LabProcess

    server = DevServer(tmp_path / "temporal")
    client = await server.start()
    workers: Workers | None = None
    log: list[str] = []
    began = time.monotonic()
    try:
        async with LabProcess(clusters=1, directory=tmp_path / "lab") as lab:
            workers = Workers(client, unique("chaos"), str(lab.kubeconfig), tmp_path)
            await workers.replace()
            fleet = RunningWorker(client=client, task_queue=workers.task_queue)
            async with suite_clusters(fleet, lab, CLUSTERS) as unsorted:
                names = sorted(unsorted)  # the plan's order (name-0, name-1, name-10, ...)
                for name in names:
                    lab.admin.fault(name, "slow", latency_ms=LATENCY_MS)
                before = await asyncio.to_thread(generations, lab, names)
                handle: WorkflowHandle[Any, RolloutReport] = await start(
                    fleet,
                    names,
                    K8sTarget(version=NEW),
                    WAVES,
                    max_concurrent=5,  # the default cluster timeout (30 min) is generous
                )
                log.append(f"onboarded {CLUSTERS} clusters in {time.monotonic() - began:.0f}s")
                await disrupt(client, server, workers, handle, log)
                report = await retrying(
                    handle.result, deadline=RESULT_DEADLINE, attempt=RESULT_DEADLINE, what="result"
                )
                log.append(f"run finished at {time.monotonic() - began:.0f}s")
                for name in names:
                    lab.admin.clear(name)

                outcomes = {o.name: (o.status, o.reason) for o in report.outcomes}
                assert report.status == RunStatus.COMPLETED, (report.halt_reason, outcomes, log)
                assert [o.status for o in report.outcomes] == [ClusterStatus.SUCCEEDED] * CLUSTERS
                after = await asyncio.to_thread(generations, lab, names)
                assert after == {key: value + 1 for key, value in before.items()}  # one write each
                for name in names:
                    assert await asyncio.to_thread(versions, lab, name) == {NEW}
                await retrying(lambda: assert_unlocked(fleet, names), what="records")
                retried: collections.Counter[str] = collections.Counter()
                for name in names:
                    child = f"{handle.id}/{name}"
                    runs = await retrying(lambda child=child: child_runs(client, child))  # type: ignore[misc]
                    assert len(runs) == 1, (child, [(r.run_id, r.status) for r in runs])
                    retried.update(await retried_activities(client, child))
                log.append(f"activities that ran again after a kill: {dict(retried)}")
                assert len(await child_runs(client, handle.id)) == 1
                assert workers.killed >= 5 and server.starts == 2, log
                # The kills interrupted work in flight, so the test proves something.
                assert retried, log
    finally:
        if workers is not None:
            workers.stop()
        server.stop()
        print("\n".join(log))
