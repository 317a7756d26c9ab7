"""Rollouts with the real per-cluster children against the lab: Cluster API upgrades,
add-on images, faults, locks. Each test adds its own lab clusters (labelled with a suite)
so the shared default fleet is never changed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client as k8s
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from activities.inventory import get_record
from activities.kube import api_client
from fleet.addon_target import AddonTarget
from fleet.k8s_target import K8sTarget
from fleet.models import CredentialRef, Phase, RecordsQuery
from fleet.rollout_models import (
    ApproveRequest,
    ClusterStatus,
    ControlRequest,
    Outcome,
    RolloutOptions,
    RolloutReport,
    RolloutSpec,
    RunStatus,
    WaveStatus,
)
from starters import rollouts
from starters.errors import CliError
from starters.inventory import list_clusters, onboard_many
from tests.conftest import RunningWorker, lab_request
from tests.workflows.rollout_support import eventually

OLD, NEW = "v1.30.6", "v1.31.2"
COREDNS = "registry.k8s.io/coredns/coredns:v1.11.3"


@contextlib.asynccontextmanager
async def suite_clusters(worker: RunningWorker, lab: Any, count: int) -> AsyncIterator[list[str]]:
    """`count` fresh lab clusters, onboarded, labelled `suite=<id>`; removed afterwards."""
    suite = f"r{uuid.uuid4().hex[:6]}"
    names = [f"{suite}-{i}" for i in range(count)]
    labels = {"env": "prod", "region": "eu", "provider": "aws", "suite": suite}
    for name in names:
        lab.admin.add_cluster(name, labels)
    try:
        requests = [lab_request(lab, name) for name in names]
        results = await onboard_many(worker.client, requests, task_queue=worker.task_queue)
        assert not [r for r in results if isinstance(r, BaseException)], results
        await eventually(lambda: _listed(worker, suite, count))
        yield names
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                lab.admin.remove_cluster(name)


async def _listed(worker: RunningWorker, suite: str, count: int) -> bool:
    records = await list_clusters(worker.client, RecordsQuery(selector=f"suite={suite}"))
    return len(records) == count


async def start(
    worker: RunningWorker, names: list[str], operation: Any, waves: str, **options: Any
) -> WorkflowHandle[Any, RolloutReport]:
    spec = RolloutSpec(
        id=uuid.uuid4().hex[:8],
        selector=f"suite={names[0].rsplit('-', 1)[0]}",
        waves=[waves],
        operation=operation,
        options=RolloutOptions(**options),
    )
    plan = await rollouts.make_plan(worker.client, spec)
    assert plan.cluster_names() == names
    return await rollouts.start_rollout(worker.client, plan, task_queue=worker.task_queue)


def cluster_api(lab: Any, name: str) -> k8s.ApiClient:
    return api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{name}"))


def versions(lab: Any, name: str) -> set[str]:
    """Every version the cluster reports: API server and each kubelet."""
    api = cluster_api(lab, name)
    nodes: list[Any] = k8s.CoreV1Api(api).list_node().items
    return {k8s.VersionApi(api).get_code().git_version} | {
        n.status.node_info.kubelet_version for n in nodes
    }


def coredns_image(lab: Any, name: str) -> str:
    deployment: Any = k8s.AppsV1Api(cluster_api(lab, name)).read_namespaced_deployment(
        "coredns", "kube-system"
    )
    return str(deployment.spec.template.spec.containers[0].image)


async def assert_unlocked(worker: RunningWorker, names: list[str]) -> None:
    for name in names:
        record = await get_record(worker.client, name)
        assert record and record.lock is None and record.phase == Phase.ACTIVE, record


async def test_k8s_three_waves_to_completion(worker: RunningWorker, lab: Any) -> None:
    async with suite_clusters(worker, lab, 3) as names:
        handle = await start(worker, names, K8sTarget(version=NEW), "canary:1,1,rest")
        report: RolloutReport = await handle.result()
        assert report.status == RunStatus.COMPLETED, report
        assert [o.status for o in report.outcomes] == [ClusterStatus.SUCCEEDED] * 3
        assert [(o.from_version, o.to_version) for o in report.outcomes] == [(OLD, NEW)] * 3
        for name in names:
            assert await asyncio.to_thread(versions, lab, name) == {NEW}
            record = await get_record(worker.client, name)
            assert record and record.version == NEW
        await assert_unlocked(worker, names)


async def test_upgrade_fail_on_canary_halts_before_wave_two(
    worker: RunningWorker, lab: Any
) -> None:
    async with suite_clusters(worker, lab, 2) as names:
        lab.admin.fault(names[0], "upgrade-fail")
        try:
            handle = await start(worker, names, K8sTarget(version=NEW), "canary:1,rest")
            report = await handle.result()
        finally:
            lab.admin.clear(names[0])
        canary, second = report.outcomes
        assert report.status == RunStatus.HALTED
        assert canary.status == ClusterStatus.FAILED and "upgrade failed" in canary.reason
        assert canary.to_version == OLD and f"now: control plane {OLD}" in canary.reason
        assert second.status == ClusterStatus.NOT_STARTED and second.to_version == OLD
        assert await asyncio.to_thread(versions, lab, names[1]) == {OLD}
        await assert_unlocked(worker, names)


async def test_dark_cluster_skipped_by_option(worker: RunningWorker, lab: Any) -> None:
    async with suite_clusters(worker, lab, 2) as names:
        lab.admin.fault(names[0], "dark", mode="refuse")
        try:
            operation = AddonTarget(name="coredns", image=f"{COREDNS}-a")
            handle = await start(worker, names, operation, "rest", skip_unreachable=True)
            report = await handle.result()
        finally:
            lab.admin.clear(names[0])
        dark, reachable = report.outcomes
        assert report.status == RunStatus.COMPLETED
        assert dark.status == ClusterStatus.UNREACHABLE and dark.reason.startswith("skipped")
        assert reachable.status == ClusterStatus.SUCCEEDED
        assert await asyncio.to_thread(coredns_image, lab, names[0]) == COREDNS
        await assert_unlocked(worker, names)


async def test_abort_lets_the_running_cluster_finish_and_releases_locks(
    worker: RunningWorker, lab: Any
) -> None:
    async with suite_clusters(worker, lab, 3) as names:
        handle = await start(worker, names, K8sTarget(version=NEW), "rest", max_concurrent=1)
        await eventually(lambda: _locked(worker, names[0]))
        await rollouts.control(worker.client, handle.id, "abort", ControlRequest(who="test"))
        report = await handle.result()
        assert report.status == RunStatus.ABORTED
        assert [o.status for o in report.outcomes] == [
            ClusterStatus.SUCCEEDED,
            ClusterStatus.NOT_STARTED,
            ClusterStatus.NOT_STARTED,
        ]
        await assert_unlocked(worker, names)
        assert await asyncio.to_thread(versions, lab, names[1]) == {OLD}


async def _locked(worker: RunningWorker, name: str) -> bool:
    record = await get_record(worker.client, name)
    return bool(record and record.lock)


async def test_addon_rollback_restores_every_changed_cluster(
    worker: RunningWorker, lab: Any
) -> None:
    async with suite_clusters(worker, lab, 3) as names:
        operation = AddonTarget(name="coredns", image=f"{COREDNS}-b")
        handle = await start(worker, names, operation, "canary:1,1,rest", approve_between=True)
        for wave in (1, 2):
            await eventually(
                lambda wave=wave: _awaiting(worker, handle.id, wave)  # type: ignore[misc]
            )
            if wave == 1:
                approval = ApproveRequest(who="test", wave="wave-2")
                await rollouts.control(worker.client, handle.id, "approve", approval)
        assert await asyncio.to_thread(coredns_image, lab, names[1]) == f"{COREDNS}-b"
        await rollouts.control(worker.client, handle.id, "rollback", ControlRequest(who="test"))
        report = await handle.result()
        assert report.status == RunStatus.ROLLED_BACK
        assert [o.status for o in report.outcomes] == [
            ClusterStatus.ROLLED_BACK,
            ClusterStatus.ROLLED_BACK,
            ClusterStatus.NOT_STARTED,
        ]
        for name in names:
            assert await asyncio.to_thread(coredns_image, lab, name) == COREDNS
        await assert_unlocked(worker, names)


async def test_broken_image_fails_canary_and_auto_rollback_restores_it(
    worker: RunningWorker, lab: Any
) -> None:
    async with suite_clusters(worker, lab, 2) as names:
        apps = k8s.AppsV1Api(cluster_api(lab, names[0]))
        patch = {"spec": {"progressDeadlineSeconds": 2}}
        await asyncio.to_thread(apps.patch_namespaced_deployment, "coredns", "kube-system", patch)
        await eventually(lambda: asyncio.to_thread(_settled, apps))
        operation = AddonTarget(name="coredns", image="registry.k8s.io/coredns/coredns:broken")
        handle = await start(worker, names, operation, "canary:1,rest", auto_rollback=True)
        report = await handle.result()
        canary, second = report.outcomes
        assert report.status == RunStatus.ROLLED_BACK
        assert canary.status == ClusterStatus.ROLLED_BACK, (canary, report.halt_reason)
        assert second.status == ClusterStatus.NOT_STARTED
        assert "ProgressDeadlineExceeded" in report.halt_reason
        assert await asyncio.to_thread(coredns_image, lab, names[0]) == COREDNS
        await assert_unlocked(worker, names)


async def test_an_image_that_cannot_be_pulled_halts_the_canary(
    worker: RunningWorker, lab: Any
) -> None:
    """The lab pulls images: a valid reference its registry does not have leaves the new
    pods in ImagePullBackOff, so the canary fails and nothing else is touched."""
    missing = f"{COREDNS}-gone-{uuid.uuid4().hex[:4]}"
    async with suite_clusters(worker, lab, 2) as names:
        apps = k8s.AppsV1Api(cluster_api(lab, names[0]))
        patch = {"spec": {"progressDeadlineSeconds": 2}}
        await asyncio.to_thread(apps.patch_namespaced_deployment, "coredns", "kube-system", patch)
        await eventually(lambda: asyncio.to_thread(_settled, apps))
        for name in names:
            lab.admin.fault(name, "image-missing", images=[missing])
        handle = await start(
            worker, names, AddonTarget(name="coredns", image=missing), "canary:1,rest"
        )
        report = await handle.result()
        canary, second = report.outcomes
        assert report.outcome == Outcome.HALTED, report
        assert canary.status == ClusterStatus.FAILED and canary.to_version == missing
        assert "ProgressDeadlineExceeded" in canary.reason or "ImagePull" in canary.reason
        assert second.status == ClusterStatus.NOT_STARTED
        assert await asyncio.to_thread(coredns_image, lab, names[1]) == COREDNS
        await assert_unlocked(worker, names)


def _settled(apps: k8s.AppsV1Api) -> bool:
    deployment: Any = apps.read_namespaced_deployment("coredns", "kube-system")
    status = deployment.status
    return bool(
        status.observed_generation == deployment.metadata.generation
        and status.available_replicas == deployment.spec.replicas
    )


async def _awaiting(worker: RunningWorker, rollout: str, wave: int) -> bool:
    progress = await rollouts.progress(worker.client, rollout)
    return progress.waves[wave].status == WaveStatus.AWAITING_APPROVAL


async def test_terminated_parent_cancels_children_which_release_their_locks(
    worker: RunningWorker, lab: Any
) -> None:
    async with suite_clusters(worker, lab, 1) as names:
        handle = await start(worker, names, K8sTarget(version=NEW), "rest")
        await eventually(lambda: _locked(worker, names[0]))
        await handle.terminate("operator pulled the plug")
        child = worker.client.get_workflow_handle(f"{handle.id}/{names[0]}")
        await eventually(lambda: _closed(child))
        assert (await child.describe()).status == WorkflowExecutionStatus.CANCELED
        await eventually(lambda: _unlocked(worker, names[0]))


async def _closed(handle: WorkflowHandle[Any, Any]) -> bool:
    return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING


async def _unlocked(worker: RunningWorker, name: str) -> bool:
    record = await get_record(worker.client, name)
    return bool(record and record.lock is None and record.phase == Phase.ACTIVE)


async def test_plan_check_reads_live_and_changes_nothing(worker: RunningWorker, lab: Any) -> None:
    async with suite_clusters(worker, lab, 2) as names:
        selector = f"suite={names[0].rsplit('-', 1)[0]}"
        k8s_spec = RolloutSpec(id="dry", selector=selector, operation=K8sTarget(version=NEW))
        plan = await rollouts.make_plan(worker.client, k8s_spec)
        await rollouts.check_plan(worker.client, plan, task_queue=worker.task_queue)
        assert await asyncio.to_thread(versions, lab, names[0]) == {OLD}
        unknown = AddonTarget(name="no-such-addon", image="x:1")
        addon_spec = RolloutSpec(id="dry", selector=selector, operation=unknown)
        plan = await rollouts.make_plan(worker.client, addon_spec)
        with pytest.raises(CliError) as refused:
            await rollouts.check_plan(worker.client, plan, task_queue=worker.task_queue)
        assert "plan refused, nothing was changed" in refused.value.message
        assert all(f"{name}: unknown add-on" in refused.value.message for name in names)


async def test_plan_check_without_a_worker_fails_at_once(worker: RunningWorker, lab: Any) -> None:
    """No worker polls the queue: a clear line at once, no workflow left waiting."""
    async with suite_clusters(worker, lab, 1) as names:
        spec = RolloutSpec(
            id="dry",
            selector=f"suite={names[0].rsplit('-', 1)[0]}",
            operation=K8sTarget(version=NEW),
        )
        plan = await rollouts.make_plan(worker.client, spec)
        with pytest.raises(CliError, match="no worker is polling task queue 'nobody-polls'"):
            await asyncio.wait_for(
                rollouts.check_plan(worker.client, plan, task_queue="nobody-polls"), 10
            )


async def test_health_gate_after_upgrade_waits_for_the_cluster_to_settle(
    worker: RunningWorker, tmp_path: Any
) -> None:
    """kubeadm rolls kube-proxy after a control-plane upgrade; while it rolls, kube-system is
    not available. On a lab whose pods take seconds to start, that roll outlasts the node
    upgrades, so the gate after the change first reads `degraded`: it must wait for the
    cluster to settle (a durable timer), not fail the cluster."""
    from lab.testing import LabProcess

    async with LabProcess(
        clusters=1, directory=tmp_path / "lab", rollout_delay=4, upgrade_seconds=0.2, nodes=2
    ) as slow_lab:
        name = f"settle-{uuid.uuid4().hex[:6]}"
        slow_lab.admin.add_cluster(name, {"env": "prod", "suite": name})
        [result] = await onboard_many(
            worker.client, [lab_request(slow_lab, name)], task_queue=worker.task_queue
        )
        assert not isinstance(result, BaseException), result
        await eventually(lambda: _listed(worker, name, 1))
        spec = RolloutSpec(
            id=uuid.uuid4().hex[:8],
            selector=f"suite={name}",
            waves=["rest"],
            operation=K8sTarget(version=NEW),
        )
        plan = await rollouts.make_plan(worker.client, spec)
        handle = await rollouts.start_rollout(worker.client, plan, task_queue=worker.task_queue)
        report: RolloutReport = await handle.result()
        assert report.status == RunStatus.COMPLETED, report
        assert [o.status for o in report.outcomes] == [ClusterStatus.SUCCEEDED]
        child = worker.client.get_workflow_handle(f"{handle.id}/{name}")
        history = await child.fetch_history()
        settle_timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
        assert settle_timers, "the gate never saw the cluster unsettled: the test proves nothing"
        assert await asyncio.to_thread(versions, slow_lab, name) == {NEW}
        await assert_unlocked(worker, [name])
