"""AddonUpgrade: set one container image of a Deployment/DaemonSet on one cluster and wait.

Lock -> health gate -> read the current image (kept in history: the undo target) -> set
the new image -> wait for the rollout -> health gate -> release the lock. The result's
`from_version` is the previous image and `changed` says whether the workload was written,
also on failure, so the parent can undo exactly the clusters it changed. An undo is the
same workflow with the previous image as target and `rollback=True` (no gate before: the
cluster is expected to be unhealthy then).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.cluster_task import (
    ClusterFailed,
    acquire_lock,
    activity_failure,
    failure,
    health_gate,
    release_lock,
)
from workflows.common import HEARTBEAT, KUBE_RETRY, KUBE_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from fleet.rollout_models import (
        AddonTarget,
        ClusterResult,
        ClusterStatus,
        ClusterTask,
        SetImage,
        WaitRollout,
        WorkloadRef,
        WorkloadState,
    )


@workflow.defn(name="AddonUpgrade")
class AddonUpgrade:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        assert isinstance(task.operation, AddonTarget)
        result = ClusterResult(cluster=task.cluster.name, status=ClusterStatus.RUNNING)
        try:
            await acquire_lock(task, result, operation="addon", phase=None)
            try:
                await self._upgrade(task, task.operation, result)
            finally:
                self._set_step("releasing the lock")
                await release_lock(task)
        except ClusterFailed as failed:
            raise failure(failed.result) from None
        return result

    async def _upgrade(self, task: ClusterTask, target: AddonTarget, result: ClusterResult) -> None:
        if task.health_gates and not task.rollback:
            self._set_step("health gate before")
            await health_gate(task, result, when="before")
        ref = WorkloadRef(
            cluster=task.cluster.ref(),
            namespace=target.namespace,
            name=target.name,
            workload=target.workload,
            container=target.container,
        )
        try:
            self._set_step(f"reading {target.describe()}")
            state: WorkloadState = await workflow.execute_activity(
                "read_workload",
                ref,
                result_type=WorkloadState,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
            )
            result.from_version = result.to_version = state.image
            if state.image == target.image:
                result.status = ClusterStatus.UNCHANGED
                return
            result.changed = True  # from here on the workload may have been written
            self._set_step(f"setting {state.container} image {target.image}")
            state = await workflow.execute_activity(
                "set_workload_image",
                SetImage(workload=ref, image=target.image),
                result_type=WorkloadState,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary=f"image {target.image}",
            )
            result.to_version = state.image
            self._set_step(f"waiting for the rollout of {target.image}")
            await workflow.execute_activity(
                "wait_workload_rollout",
                WaitRollout(
                    workload=ref, generation=state.generation, timeout_seconds=task.timeout_seconds
                ),
                result_type=WorkloadState,
                start_to_close_timeout=timedelta(seconds=task.timeout_seconds + 60),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"rollout of {target.image}",
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None
        if task.health_gates:
            self._set_step("health gate after")
            await health_gate(task, result, when="after")
        result.status = ClusterStatus.SUCCEEDED

    def _set_step(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(step)
