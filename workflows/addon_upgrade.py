"""AddonUpgrade: set one container image of a Deployment/DaemonSet on one cluster and wait.

On the shared skeleton (workflows/cluster_task.py), the change reads the current image
(kept in history: the undo target) and sets the new one; the verification waits for the
workload's rollout. The result's `from_version` is the previous image and `changed` says
whether the workload was written, also on failure, so the parent can undo exactly the
clusters it changed. An undo is the same workflow with the previous image as target and
`rollback=True` (no gate before: the cluster is expected to be unhealthy then).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.cluster_task import ClusterChange, activity_failure
from workflows.common import HEARTBEAT, KUBE_RETRY, KUBE_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.addons import read_workload, set_workload_image, wait_workload_rollout
    from fleet.addon_target import AddonTarget
    from fleet.rollout_models import (
        ClusterAccess,
        ClusterResult,
        ClusterStatus,
        ClusterTask,
        SetImage,
        WaitRollout,
        WorkloadRef,
    )


@workflow.defn(name="AddonUpgrade")
class AddonUpgrade(ClusterChange):
    lock_operation = "addon"

    def __init__(self) -> None:
        super().__init__()
        self._generation = 0

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        return await self.execute(task)

    async def change(self, task: ClusterTask, result: ClusterResult) -> None:
        target, ref = _target(task), _workload(task, self.access)
        try:
            self.set_step(f"reading {target.workload_name()}")
            state = await workflow.execute_local_activity(
                read_workload, ref, start_to_close_timeout=KUBE_TIMEOUT, retry_policy=KUBE_RETRY
            )
            result.from_version = result.to_version = state.image
            if state.image == target.image:
                result.status = ClusterStatus.UNCHANGED
                return
            result.changed = True  # from here on the workload may have been written
            self.set_step(f"setting {state.container} image {target.image}")
            state = await workflow.execute_activity(
                set_workload_image,
                SetImage(workload=ref, image=target.image),
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary=f"image {target.image}",
            )
        except (ActivityError, ApplicationError) as err:
            raise activity_failure(err, result) from None
        result.to_version = state.image
        self._generation = state.generation

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        image = _target(task).image
        self.set_step(f"waiting for the rollout of {image}")
        try:
            await workflow.execute_activity(
                wait_workload_rollout,
                WaitRollout(
                    workload=_workload(task, self.access),
                    generation=self._generation,
                    timeout_seconds=task.timeout_seconds,
                ),
                start_to_close_timeout=timedelta(seconds=task.timeout_seconds + 60),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"rollout of {image}",
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None


def _target(task: ClusterTask) -> AddonTarget:
    assert isinstance(task.operation, AddonTarget)
    return task.operation


def _workload(task: ClusterTask, access: ClusterAccess) -> WorkloadRef:
    target = _target(task)
    return WorkloadRef(
        cluster=access.ref(),
        namespace=target.namespace,
        name=target.name,
        workload=target.workload,
        container=target.container,
    )
