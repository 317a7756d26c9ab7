"""The `annotate` kind's per-cluster child on the shared skeleton: read, write, read back."""

from __future__ import annotations

from collections.abc import Callable

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
        target = _target(task)
        current = await self._call(read_annotation, self._request(task), result)
        result.from_version = result.to_version = current.value
        if current.value == target.value:
            result.status = ClusterStatus.UNCHANGED
            return
        result.changed = True
        write = self._request(task).model_copy(update={"value": target.value})
        await self._call(write_annotation, write, result)

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        target = _target(task)
        now = await self._call(read_annotation, self._request(task), result)
        result.to_version = now.value
        if now.value != target.value:
            result.status = ClusterStatus.FAILED
            result.reason = f"annotation reads {now.value!r} after writing {target.value!r}"
            raise ClusterFailed(result)

    def _request(self, task: ClusterTask) -> Annotation:
        return Annotation(cluster=self.access.ref(), key=_target(task).key)

    async def _call(
        self,
        activity: Callable[[Annotation], Annotation],
        request: Annotation,
        result: ClusterResult,
    ) -> Annotation:
        try:
            return await workflow.execute_activity(
                activity, request, start_to_close_timeout=KUBE_TIMEOUT, retry_policy=KUBE_RETRY
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None


def _target(task: ClusterTask) -> AnnotateTarget:
    assert isinstance(task.operation, AnnotateTarget)
    return task.operation
