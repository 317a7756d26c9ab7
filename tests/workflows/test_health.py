"""Health readings against the lab, the fleet sweep, and its schedule."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.health import check_cluster_health, check_clusters_health
from activities.inventory import get_record
from fleet.ids import HEALTH_SCHEDULE_ID
from fleet.models import (
    ClusterRef,
    CredentialRef,
    Health,
    HealthBatch,
    HealthReport,
    SweepRequest,
    SweepResult,
)
from starters.inventory import onboard
from starters.schedules import ensure_health_schedule
from tests.conftest import RunningWorker, lab_request
from tests.workflows.core_support import eventually, unique
from tests.workflows.lab_support import lab_cluster
from tests.workflows.worker_process import spawn_worker, stop


async def health_of(lab, name: str) -> HealthReport:
    ref = ClusterRef(
        name=name, credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{name}")
    )
    return await asyncio.to_thread(ActivityEnvironment().run, check_cluster_health, ref)


async def test_healthy_cluster(lab) -> None:
    report = await health_of(lab, "eu-dev-1")
    assert report.health == Health.HEALTHY, report.reason
    assert report.api_ready and report.nodes_total == 3 and report.nodes_ready == 3
    assert report.system_workloads_total == report.system_workloads_available == 2
    assert report.version == "v1.30.6"


async def test_batch_reads_every_cluster_in_order_and_heartbeats(lab) -> None:
    """The rollout's wave check: one call for many clusters, one report each in the
    batch's order, a bad reference reported (not raised), heartbeats from its threads."""
    beats: list[tuple] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    names = ["eu-dev-1", "nowhere", "eu-dev-1"]
    refs = [
        ClusterRef(
            name=n, credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{n}")
        )
        for n in names
    ]
    answer = await asyncio.to_thread(env.run, check_clusters_health, HealthBatch(clusters=refs))
    assert [r.cluster for r in answer.reports] == names
    assert [r.health for r in answer.reports] == [
        Health.HEALTHY,
        Health.UNREACHABLE,
        Health.HEALTHY,
    ]
    assert len(beats) == 10  # five requests for each reachable cluster


async def test_health_check_heartbeats_per_request(lab) -> None:
    """A heartbeat after every request lets callers set a short heartbeat timeout."""
    beats: list[tuple] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    ref = ClusterRef(
        name="eu-dev-1",
        credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context="lab-eu-dev-1"),
    )
    report = await asyncio.to_thread(env.run, check_cluster_health, ref)
    assert report.health == Health.HEALTHY
    assert [b[0] for b in beats] == [
        f"read {path} of eu-dev-1"
        for path in (
            "/readyz",
            "/version",
            "/api/v1/nodes",
            "/apis/apps/v1/namespaces/kube-system/deployments",
            "/apis/apps/v1/namespaces/kube-system/daemonsets",
        )
    ]


async def test_not_ready_nodes_degrade(lab) -> None:
    with lab_cluster(lab) as name:
        lab.admin.fault(name, "nodes-not-ready", count=1)
        report = await health_of(lab, name)
        assert report.health == Health.DEGRADED
        assert report.nodes_ready == 2 and "1/3 nodes not Ready" in report.reason


async def test_hanging_cluster_is_unreachable_not_stuck(lab) -> None:
    with lab_cluster(lab) as name:
        lab.admin.fault(name, "dark", mode="hang")
        report = await health_of(lab, name)
        assert report.health == Health.UNREACHABLE and not report.api_ready
        assert name in report.reason


async def test_sweep_records_every_cluster(
    worker: RunningWorker, lab, onboarded_fleet: dict
) -> None:
    client = worker.client
    with lab_cluster(lab) as sick:
        await onboard(client, lab_request(lab, sick), task_queue=worker.task_queue)
        lab.admin.fault(sick, "nodes-not-ready", count=2)
        handle = await client.start_workflow(
            "FleetHealthSweep",
            SweepRequest(),
            id=unique("sweep"),
            task_queue=worker.task_queue,
            result_type=SweepResult,
        )
        result = await handle.result()
        assert sick in result.degraded
        scheduled = [
            e.activity_task_scheduled_event_attributes
            async for e in handle.fetch_history_events()
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        checks = [a for a in scheduled if a.activity_type.name == "check_cluster_health"]
        assert checks and all(a.heartbeat_timeout.ToSeconds() == 20 for a in checks)
        assert set(onboarded_fleet) <= set(result.healthy)
        record = await get_record(client, sick)
        assert record and record.health == Health.DEGRADED and "2/3" in record.health_reason
        lab.admin.clear(sick)


async def test_health_schedule_is_idempotent_and_runs(worker: RunningWorker, lab) -> None:
    client: Client = worker.client
    await ensure_health_schedule(client, interval_seconds=3600, task_queue=worker.task_queue)
    await ensure_health_schedule(client, interval_seconds=1800, task_queue=worker.task_queue)
    handle = client.get_schedule_handle(HEALTH_SCHEDULE_ID)
    described = await handle.describe()
    assert described.schedule.spec.intervals[0].every.total_seconds() == 1800
    await handle.trigger()

    async def started() -> str | None:
        actions = (await handle.describe()).info.recent_actions
        return actions[-1].action.workflow_id if actions else None  # type: ignore[attr-defined]

    sweep_id = await eventually(started)
    result = await client.get_workflow_handle(sweep_id, result_type=SweepResult).result()
    assert result.checked >= 1
    await ensure_health_schedule(client, interval_seconds=0)


async def test_worker_process_ensures_the_health_schedule(
    client: Client, lab, tmp_path: Path
) -> None:
    """A deployed worker (compose, systemd) schedules sweeps itself, not only `flotilla up`."""
    queue = unique("worker-schedule")
    process = spawn_worker(
        client, queue, kubeconfig=str(lab.kubeconfig), log=tmp_path / "w.log", health_interval=3600
    )
    handle = client.get_schedule_handle(HEALTH_SCHEDULE_ID)

    async def scheduled_on_queue() -> bool:
        try:
            described = await handle.describe()
        except RPCError:
            return False  # not created yet
        action = described.schedule.action
        return getattr(action, "task_queue", None) == queue

    try:
        await eventually(scheduled_on_queue, attempts=300)
        described = await handle.describe()
        assert described.schedule.spec.intervals[0].every.total_seconds() == 3600
    finally:
        stop(process)
        await ensure_health_schedule(client, interval_seconds=0)
