"""The `annotate` kind's per-cluster child on the shared skeleton: read, write, read back."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.cluster_task import ClusterChange, ClusterFailed, activity_failure
from workflows.common import KUBE_RETRY, KUBE_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from fleet.rollout_models import ClusterResult, ClusterStatus, ClusterTask
    from tests.operations.annotate_activities import Annotation, read_annotation, write_annotation
    from tests.operations.annotate_target import AnnotateTarget


@workflow.defn(name="Annotate")
class Annotate(ClusterChange):
    lock_operation = "annotate"

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        return await self.execute(task)

    async def change(self, task: ClusterTask, result: ClusterResult) -> None:
        assert isinstance(task.operation, AnnotateTarget)
        request = Annotation(cluster=self.access.ref(), key=task.operation.key)
        try:
            current = await workflow.execute_activity(
                read_annotation,
                request,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
            )
            result.from_version = result.to_version = current.value
            if current.value == task.operation.value:
                result.status = ClusterStatus.UNCHANGED
                return
            result.changed = True
            request.value = task.operation.value
            await workflow.execute_activity(
                write_annotation,
                request,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        assert isinstance(task.operation, AnnotateTarget)
        request = Annotation(cluster=self.access.ref(), key=task.operation.key)
        try:
            now = await workflow.execute_activity(
                read_annotation,
                request,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None
        result.to_version = now.value
        if now.value != task.operation.value:
            result.status = ClusterStatus.FAILED
            result.reason = f"annotation reads {now.value!r} after writing {task.operation.value!r}"
            raise ClusterFailed(result)
