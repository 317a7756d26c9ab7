"""A worker killed with SIGKILL in the middle of onboarding: another worker finishes the
same run, and the baseline is applied once (objects keep their uid; nothing re-created)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowHandle

from fleet.ids import onboard_id
from fleet.models import OnboardResult, Phase
from starters.inventory import onboard
from tests.conftest import RunningWorker, lab_request
from tests.workflows.core_support import baseline_versions, eventually, kube_get, unique
from tests.workflows.lab_support import lab_cluster
from tests.workflows.worker_process import spawn_worker, stop


async def baseline_started(handle: WorkflowHandle) -> bool:
    """Whether the write step (registration, baseline, release) is running."""
    description = await handle.describe()
    return any(
        a.activity_type.name == "register_and_install"
        and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for a in description.raw_description.pending_activities
    )


async def test_onboarding_survives_a_killed_worker(
    worker: RunningWorker, lab, tmp_path: Path
) -> None:
    client, kubeconfig = worker.client, str(lab.kubeconfig)
    queue = unique("crash")
    with lab_cluster(lab) as name:
        # Every API call takes a while, so the kill lands inside the baseline install.
        lab.admin.fault(name, "slow", latency_ms=1500)
        first = spawn_worker(client, queue, kubeconfig=kubeconfig, log=tmp_path / "w1.log")
        second = None
        try:
            started = await onboard(client, lab_request(lab, name), wait=False, task_queue=queue)
            assert isinstance(started, WorkflowHandle)
            await eventually(lambda: baseline_started(started), attempts=600)
            namespace = await eventually(
                lambda: asyncio.to_thread(
                    kube_get, kubeconfig, f"lab-{name}", "/api/v1/namespaces/flotilla-system"
                ),
                attempts=600,
            )
            first.send_signal(signal.SIGKILL)
            first.wait()
            second = spawn_worker(client, queue, kubeconfig=kubeconfig, log=tmp_path / "w2.log")
            result = await asyncio.wait_for(started.result(), 300)
        finally:
            stop(first)
            if second is not None:
                stop(second)
        assert isinstance(result, OnboardResult)
        assert result.record.phase == Phase.ACTIVE and result.record.lock is None
        # Objects made before the kill were found, not re-created, by the retried attempt.
        assert "Namespace/flotilla-system" in result.baseline.unchanged
        assert len(result.baseline.created) + len(result.baseline.unchanged) == 5
        assert not result.baseline.updated
        lab.admin.clear(name)
        versions = await baseline_versions(kubeconfig, f"lab-{name}")
        ns = versions["/api/v1/namespaces/flotilla-system"]
        assert ns and ns[0] == namespace["metadata"]["uid"]
        assert ns[1] == namespace["metadata"]["resourceVersion"]  # never written again

        runs = [wf async for wf in client.list_workflows(f'WorkflowId = "{onboard_id(name)}"')]
        assert len(runs) == 1
        history = await started.fetch_history()
        completed = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        ]
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        assert max(attempts) >= 2  # the interrupted activity ran again on the new worker
        assert len(completed) == len(
            {e.activity_task_completed_event_attributes.scheduled_event_id for e in completed}
        )
