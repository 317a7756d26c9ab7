"""K8sUpgrade: move one cluster to a Kubernetes version through Cluster API.

On the shared skeleton (workflows/cluster_task.py), the change is: read Cluster API
versions -> control plane version and wait, then worker versions and wait (one activity
that heartbeats: a round trip through the server fewer than two); the verification reads
what the cluster reports (/version, every kubelet); the record is the new version in the
inventory, written with the lock's release. The reads are local activities (quick, no
wait). Every step is idempotent, so a re-run after a crash or on an already
upgraded cluster does no harm; a cluster already at the target ends `unchanged`. A failed
upgrade cannot be undone (no downgrades): the result says, and the inventory records,
which version the cluster is on.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.cluster_task import (
    ClusterChange,
    ClusterFailed,
    activity_failure,
)
from workflows.common import HEARTBEAT, KUBE_RETRY, KUBE_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.capi import (
        read_capi_state,
        read_cluster_versions,
        upgrade_cluster,
    )
    from fleet.k8s_target import K8sTarget
    from fleet.models import Phase
    from fleet.rollout_models import (
        CapiRequest,
        CapiState,
        ClusterAccess,
        ClusterResult,
        ClusterStatus,
        ClusterTask,
        VersionCheck,
    )
    from fleet.versions import VersionError, node_skew_problem, upgrade_problem


@workflow.defn(name="K8sUpgrade")
class K8sUpgrade(ClusterChange):
    lock_operation = "upgrade"
    lock_phase = Phase.UPGRADING

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        return await self.execute(task)

    async def change(self, task: ClusterTask, result: ClusterResult) -> None:
        request = _request(task, self.access)
        try:
            self.set_step("reading Cluster API objects")
            state = await workflow.execute_local_activity(
                read_capi_state,
                request,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary="reading Cluster API objects",
            )
            current = state.control_plane.spec_version
            result.from_version = state.control_plane.status_version or current
            result.to_version = result.from_version
            workers = [md.spec_version for md in state.workers]
            if problem := version_problem(current, request.version, workers):
                result.status = ClusterStatus.FAILED
                result.reason = problem
                raise ClusterFailed(result)
            if current != request.version or any(w != request.version for w in workers):
                result.changed = True
            state = await self._upgrade(request)
            result.to_version = state.control_plane.status_version
        except (ActivityError, ApplicationError) as err:
            raise activity_failure(err, result) from None

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        self.set_step("verifying versions")
        target = _target(task).version
        try:
            report = await workflow.execute_local_activity(
                read_cluster_versions,
                VersionCheck(cluster=self.access.ref(), version=target),
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
            )
        except (ActivityError, ApplicationError) as err:
            raise activity_failure(err, result) from None
        result.to_version = report.api_version
        if report.problems:
            result.status = ClusterStatus.FAILED
            result.reason = f"after the upgrade to {target}: " + "; ".join(report.problems)
            raise ClusterFailed(result)

    async def record(self, task: ClusterTask, result: ClusterResult) -> None:
        self.record_version(_target(task).version)

    async def where_now(self, task: ClusterTask, result: ClusterResult) -> None:
        """Adds the versions Cluster API reports to the reason and records the control
        plane's version in the inventory (with the release), so the record is never left
        stale."""
        try:
            state = await workflow.execute_local_activity(
                read_capi_state,
                _request(task, self.access),
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary="reading versions after the failure",
            )
        except (ActivityError, ApplicationError):
            return
        result.to_version = state.control_plane.status_version or result.to_version
        workers = ", ".join(
            f"{w.name} {w.spec_version} {w.updated}/{w.replicas}" for w in state.workers
        )
        result.reason += f" (now: control plane {result.to_version}; workers {workers})"
        if result.to_version:
            self.record_version(result.to_version)

    async def _upgrade(self, request: CapiRequest) -> CapiState:
        step = f"control plane, then workers -> {request.version}"
        self.set_step(step)
        return await workflow.execute_activity(
            upgrade_cluster,
            request,
            start_to_close_timeout=timedelta(seconds=2 * request.timeout_seconds + 60),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=KUBE_RETRY,
            summary=step,
        )


def _target(task: ClusterTask) -> K8sTarget:
    assert isinstance(task.operation, K8sTarget)
    return task.operation


def _request(task: ClusterTask, access: ClusterAccess) -> CapiRequest:
    if access.management is None:
        raise ClusterFailed(
            ClusterResult(
                cluster=task.cluster.name,
                status=ClusterStatus.FAILED,
                reason="no Cluster API management reference in the inventory record",
                from_version=task.cluster.version,
                to_version=task.cluster.version,
            )
        )
    return CapiRequest(
        cluster=task.cluster.name,
        management=access.management,
        version=_target(task).version,
        timeout_seconds=task.timeout_seconds,
    )


def version_problem(control_plane: str, target: str, workers: list[str]) -> str:
    """Why the versions Cluster API reports forbid the upgrade; "" when they allow it. An
    unparsable version is a problem too (raising it would fail the workflow task forever)."""
    try:
        return upgrade_problem(control_plane, target) or next(
            (p for version in workers if (p := node_skew_problem(control_plane, version))), ""
        )
    except VersionError as exc:
        return f"Cluster API reports a version that cannot be checked: {exc}"
