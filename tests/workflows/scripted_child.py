"""ScriptedCluster: a per-cluster child for engine tests, scripted by the cluster's labels.

`outcome` = ok | fail | unreachable; `hold=yes` keeps it running until signalled `release`.
An undo run (`rollback`) always succeeds. Kept in its own module so the workflow sandbox
imports nothing from the test machinery.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from temporalio import workflow

from workflows.cluster_task import cluster_failure

with workflow.unsafe.imports_passed_through():
    from fleet.rollout_models import ClusterResult, ClusterStatus, ClusterTask
    from fleet.targets import Target


class ScriptedTarget(Target):
    """The `scripted` operation kind's target: nothing real changes."""

    kind: Literal["scripted"] = "scripted"
    image: str = "new"
    undoable: ClassVar[bool] = True

    def describe(self) -> str:
        return f"scripted change to {self.image}"

    def undo(self, previous: str) -> ScriptedTarget:
        return self.model_copy(update={"image": previous})


@workflow.defn(name="ScriptedCluster")
class ScriptedCluster:
    def __init__(self) -> None:
        self._released = False

    @workflow.signal
    def release(self) -> None:
        self._released = True

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        labels = task.cluster.labels
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
