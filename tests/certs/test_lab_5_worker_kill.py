"""A worker killed (SIGKILL) in the middle of a CA rotation phase: a new worker finishes
it, with the control plane rolled out exactly once (one write of KCP spec)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from fleet.certs_targets import CaRotateTarget, RotationPhase
from fleet.rollout_models import ClusterStatus, RunStatus
from tests.certs.conftest import run_rollout
from tests.conftest import RunningWorker
from tests.workflows.core_support import eventually, kube_get, unique
from tests.workflows.worker_process import spawn_worker, stop

pytestmark = pytest.mark.slow


def kcp_generation(lab: Any, name: str) -> int:
    path = (
        "/apis/controlplane.cluster.x-k8s.io/v1beta1/namespaces/fleet/kubeadmcontrolplanes/"
        f"{name}-control-plane"
    )
    kcp = kube_get(str(lab.kubeconfig), "lab-mgmt", path)
    assert kcp is not None
    return int(kcp["metadata"]["generation"])


async def test_rotation_phase_survives_a_killed_worker(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str], tmp_path: Path
) -> None:
    queue = unique("certs-crash")
    kubeconfig = str(certs_lab.kubeconfig)
    before = kcp_generation(certs_lab, "eu-dev-1")
    client = temporal_worker.client
    first = spawn_worker(client, queue, kubeconfig=kubeconfig, log=tmp_path / "w1.log")
    second = None
    try:
        handle = await run_rollout(
            RunningWorker(client=client, task_queue=queue),
            CaRotateTarget(phase=RotationPhase.ADD),
            "rest",
            selector="suite=certs,env=dev",
            wait=False,
        )
        child = client.get_workflow_handle(f"{handle.id}/eu-dev-1")

        async def rotating() -> bool:
            try:
                description = await child.describe()
            except Exception:
                return False
            pending = description.raw_description.pending_activities
            return any(a.activity_type.name == "rotate_ca" for a in pending)

        await eventually(rotating, attempts=1200)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn_worker(client, queue, kubeconfig=kubeconfig, log=tmp_path / "w2.log")
        report = await asyncio.wait_for(handle.result(), 300)
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert report.status == RunStatus.COMPLETED, report.halt_reason
    assert [o.status for o in report.outcomes] == [ClusterStatus.SUCCEEDED]
    history = await client.get_workflow_handle(f"{report.id}/eu-dev-1").fetch_history()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == "rotate_ca"
    ]
    assert attempts and attempts[0] >= 2  # the killed attempt was retried by the new worker
    assert kcp_generation(certs_lab, "eu-dev-1") == before + 1  # rolled out once
    assert len(certs_lab.admin.certificates("eu-dev-1")["trust"]) == 2
    assert all(c["trusted"] for c in certs_lab.admin.certificates("eu-dev-1")["consumers"])
