"""ScriptedCluster: a per-cluster child for engine tests, scripted per cluster by its target.

`outcome` = ok | fail | unreachable; `hold=yes` keeps it running until signalled `release`.
An undo run (`rollback`) always succeeds. Kept in its own module so the workflow sandbox
imports nothing from the test machinery.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.cluster_task import cluster_failure

with workflow.unsafe.imports_passed_through():
    from fleet.rollout_models import ClusterResult, ClusterStatus, ClusterTask
    from tests.workflows.scripted_target import ScriptedTarget


@workflow.defn(name="ScriptedCluster")
class ScriptedCluster:
    def __init__(self) -> None:
        self._released = False

    @workflow.signal
    def release(self) -> None:
        self._released = True

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        assert isinstance(task.operation, ScriptedTarget)
        labels = task.operation.scripts.get(task.cluster.name, {})
        if labels.get("hold") == "yes" and not task.rollback:
            await workflow.wait_condition(lambda: self._released)
        outcome = "ok" if task.rollback else labels.get("outcome", "ok")
        result = ClusterResult(
            cluster=task.cluster.name,
            status=ClusterStatus.SUCCEEDED,
            from_version="old",
            to_version="new" if not task.rollback else "old",
            changed=True,
        )
        if outcome == "fail":
            result.status, result.reason = ClusterStatus.FAILED, "scripted failure"
            raise cluster_failure(result)
        if outcome == "unreachable":
            result.status, result.reason, result.changed = (
                ClusterStatus.UNREACHABLE,
                "scripted: unreachable",
                False,
            )
            raise cluster_failure(result)
        return result
