"""A worker killed (SIGKILL) in the middle of a rollout wave: a new worker finishes the
same run; every cluster is upgraded exactly once (each Cluster API object written once,
one child run per cluster) and none is skipped."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from activities.kube import api_client
from fleet.k8s_target import K8sTarget
from fleet.models import CredentialRef
from fleet.rollout_models import ClusterStatus, RunStatus
from starters import rollouts
from tests.conftest import RunningWorker
from tests.workflows.core_support import unique
from tests.workflows.rollout_support import eventually
from tests.workflows.test_rollout_lab import NEW, start, suite_clusters, versions
from tests.workflows.worker_process import spawn_worker, stop


def generations(lab: Any, names: list[str]) -> dict[str, int]:
    """metadata.generation of each cluster's KubeadmControlPlane and MachineDeployment."""
    mgmt = api_client(
        CredentialRef(kubeconfig=str(lab.kubeconfig), context=lab.info["management_context"])
    )
    api = k8s.CustomObjectsApi(mgmt)
    found = {}
    for name in names:
        kcp: Any = api.get_namespaced_custom_object(
            "controlplane.cluster.x-k8s.io",
            "v1beta1",
            "fleet",
            "kubeadmcontrolplanes",
            f"{name}-control-plane",
        )
        md: Any = api.get_namespaced_custom_object(
            "cluster.x-k8s.io", "v1beta1", "fleet", "machinedeployments", f"{name}-md-0"
        )
        found[f"{name}/kcp"] = kcp["metadata"]["generation"]
        found[f"{name}/md"] = md["metadata"]["generation"]
    return found


async def test_rollout_survives_a_killed_worker(
    worker: RunningWorker, lab: Any, tmp_path: Path
) -> None:
    queue = unique("rollout-crash")
    kubeconfig = str(lab.kubeconfig)
    async with suite_clusters(worker, lab, 4) as names:
        before = await asyncio.to_thread(generations, lab, names)
        crash_worker = RunningWorker(client=worker.client, task_queue=queue)
        first = spawn_worker(worker.client, queue, kubeconfig=kubeconfig, log=tmp_path / "w1.log")
        second = None
        try:
            handle = await start(
                crash_worker, names, K8sTarget(version=NEW), "canary:1,rest", max_concurrent=3
            )

            async def wave_two_running() -> bool:
                p = await rollouts.progress(worker.client, handle.id)
                return p.current_wave == 1 and any(
                    c.status == ClusterStatus.RUNNING for c in p.clusters[1:]
                )

            await eventually(wave_two_running, attempts=1200)
            first.send_signal(signal.SIGKILL)
            first.wait()
            second = spawn_worker(
                worker.client, queue, kubeconfig=kubeconfig, log=tmp_path / "w2.log"
            )
            report = await asyncio.wait_for(handle.result(), 300)
        finally:
            stop(first)
            if second is not None:
                stop(second)
        assert report.status == RunStatus.COMPLETED, report.halt_reason
        assert [o.status for o in report.outcomes] == [ClusterStatus.SUCCEEDED] * 4
        after = await asyncio.to_thread(generations, lab, names)
        assert after == {key: value + 1 for key, value in before.items()}  # one write each
        for name in names:
            assert await asyncio.to_thread(versions, lab, name) == {NEW}
            child = f"{handle.id}/{name}"
            runs = [r async for r in worker.client.list_workflows(f'WorkflowId = "{child}"')]
            assert len(runs) == 1
