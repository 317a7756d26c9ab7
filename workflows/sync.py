"""SyncCluster: bring one cluster to a commit's bundles (the `sync` operation's child).

On the shared skeleton (workflows/cluster_task.py): the change first checks the cluster
without reading objects (kinds served, the prune guard, bundles leaving it). A workload
bundle leaving this cluster for others is pruned only once one of its new copies is
healthy; if none is within the wait, the old copy is kept (reported as `kept`, pruned by a
later sync). Then one pass reads each object, applies what differs (server-side apply,
field manager `flotilla`), prunes, and records the SHA on the cluster; nothing created,
changed or deleted at an already-recorded SHA is UNCHANGED. The verification previews
again: nothing may remain to create or change. The result's from/to are the previous and
new SHAs and its reason the per-cluster diff summary (`+3 ~1 -0`), which `flotilla sync
show` lists.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.cluster_task import ClusterChange, ClusterFailed, activity_failure
from workflows.common import HEARTBEAT, INVENTORY_RETRY, INVENTORY_TIMEOUT, KUBE_RETRY

with workflow.unsafe.imports_passed_through():
    from activities.inventory import resolve_clusters
    from activities.manifests import apply_cluster, wait_healthy_copy
    from fleet.rollout_models import ClusterNames, ClusterResult, ClusterStatus, ClusterTask
    from fleet.sync_models import ClusterDiff, CopiesRequest, SyncClusterRequest, SyncTarget

APPLY_TIMEOUT = timedelta(minutes=10)
# How long a cluster losing a workload waits for a healthy copy elsewhere.
COPY_WAIT_SECONDS = 300.0


@workflow.defn(name="SyncCluster")
class SyncCluster(ClusterChange):
    lock_operation = "sync"

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        return await self.execute(task)

    async def change(self, task: ClusterTask, result: ClusterResult) -> None:
        target = _target(task)
        result.to_version = target.sha[:12]
        self.set_step(f"checking {target.describe()}")
        # Checks only (kinds served, the prune guard, bundles leaving): no object is read;
        # the apply pass below reads each object once and reports what it changed.
        preview = await self._sync(task, dry_run=True, keep=[], result=result, checks_only=True)
        result.from_version = preview.previous_sha[:12]
        if preview.problem or preview.approval:
            # An approval needed now that the run's preflight did not ask for (the cluster
            # changed since): nothing is applied here.
            result.status = ClusterStatus.FAILED
            result.reason = preview.problem or f"{preview.approval}, not approved in this run"
            raise ClusterFailed(result)
        keep = await self._keep_until_copied(task, preview, result)
        result.changed = True
        self.set_step(f"applying {target.sha[:12]}")
        applied = await self._sync(task, dry_run=False, keep=keep, result=result)
        result.reason = applied.summary()
        if not applied.changes and applied.previous_sha == target.sha:
            result.changed = False
            result.status = ClusterStatus.UNCHANGED

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        self.set_step("checking nothing is left to apply")
        again = await self._sync(task, dry_run=True, keep=[], result=result)
        left = [c.key for c in again.changes if c.action in ("create", "change")]
        if left:
            result.status = ClusterStatus.FAILED
            result.reason = f"still differs from Git after applying: {', '.join(left[:5])}"
            raise ClusterFailed(result)

    async def _keep_until_copied(
        self, task: ClusterTask, preview: ClusterDiff, result: ClusterResult
    ) -> list[str]:
        """Workload bundles leaving this cluster whose new copies are not healthy yet."""
        target = _target(task)
        keep: list[str] = []
        for bundle in preview.lost:
            elsewhere = [
                n for n in target.workload_copies.get(bundle, []) if n != task.cluster.name
            ]
            if not elsewhere:
                continue  # gone from Git or not a workload: pruned (the prune guard applies)
            objects = [c.key for c in preview.changes if c.bundle == bundle]
            self.set_step(f"waiting for a healthy copy of {bundle} on {', '.join(elsewhere)}")
            try:
                access = await workflow.execute_activity(
                    resolve_clusters,
                    ClusterNames(names=elsewhere),
                    start_to_close_timeout=INVENTORY_TIMEOUT,
                    retry_policy=INVENTORY_RETRY,
                )
                answer = await workflow.execute_activity(
                    wait_healthy_copy,
                    CopiesRequest(
                        clusters=[c.ref() for c in access.clusters],
                        objects=objects,
                        timeout_seconds=COPY_WAIT_SECONDS,
                    ),
                    start_to_close_timeout=timedelta(seconds=COPY_WAIT_SECONDS + 60),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=KUBE_RETRY,
                    summary=f"healthy copy of {bundle}",
                )
            except ActivityError as err:
                raise activity_failure(err, result) from None
            if not answer.healthy_on:
                keep.append(bundle)
        return keep

    async def _sync(
        self,
        task: ClusterTask,
        *,
        dry_run: bool,
        keep: list[str],
        result: ClusterResult,
        checks_only: bool = False,
    ) -> ClusterDiff:
        target = _target(task)
        try:
            diff: ClusterDiff = await workflow.execute_activity(
                apply_cluster,
                SyncClusterRequest(
                    cluster=self.access.ref(),
                    target=target,
                    dry_run=dry_run,
                    keep=keep,
                    checks_only=checks_only,
                ),
                start_to_close_timeout=APPLY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"{'check' if checks_only else 'preview' if dry_run else 'apply'}"
                f" {target.sha[:12]}",
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None
        return diff


def _target(task: ClusterTask) -> SyncTarget:
    """The sync target, carrying the run's approval of a prune past the guard."""
    assert isinstance(task.operation, SyncTarget)
    if task.approved_by and not task.operation.prune_approved_by:
        return task.operation.model_copy(update={"prune_approved_by": task.approved_by})
    return task.operation
