"""K8sUpgrade: move one cluster to a Kubernetes version through Cluster API.

Lock (phase upgrading) -> health gate -> read Cluster API versions -> control plane version
and wait -> worker versions and wait -> verify what the cluster reports (/version, every
kubelet) -> health gate -> record the version in the inventory -> release the lock (always,
also when cancelled). Every step is idempotent, so a re-run after a crash or on an already
upgraded cluster does no harm; a cluster already at the target ends `unchanged`. A failed
upgrade cannot be undone (no downgrades): the result says which version the cluster is on.
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
    record_version,
    release_lock,
)
from workflows.common import HEARTBEAT, KUBE_RETRY, KUBE_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from fleet.models import Phase
    from fleet.rollout_models import (
        CapiRequest,
        CapiState,
        ClusterResult,
        ClusterStatus,
        ClusterTask,
        K8sTarget,
        VersionCheck,
        VersionReport,
    )
    from fleet.versions import VersionError, node_skew_problem, upgrade_problem


@workflow.defn(name="K8sUpgrade")
class K8sUpgrade:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        assert isinstance(task.operation, K8sTarget)
        target = task.operation.version
        result = ClusterResult(
            cluster=task.cluster.name,
            status=ClusterStatus.RUNNING,
            from_version=task.cluster.version,
            to_version=task.cluster.version,
        )
        try:
            await acquire_lock(task, result, operation="upgrade", phase=Phase.UPGRADING)
            try:
                await self._upgrade(task, target, result)
            finally:
                self._set_step("releasing the lock")
                await release_lock(task)
        except ClusterFailed as failed:
            raise failure(failed.result) from None
        return result

    async def _upgrade(self, task: ClusterTask, target: str, result: ClusterResult) -> None:
        if task.health_gates:
            self._set_step("health gate before")
            await health_gate(task, result, when="before")
        if task.cluster.management is None:
            result.status = ClusterStatus.FAILED
            result.reason = "no Cluster API management reference in the inventory record"
            raise ClusterFailed(result)
        request = CapiRequest(
            cluster=task.cluster.name,
            management=task.cluster.management,
            version=target,
            timeout_seconds=task.timeout_seconds,
        )
        try:
            state = await self._capi("read_capi_state", request, "reading Cluster API objects")
            current = state.control_plane.spec_version
            result.from_version = state.control_plane.status_version or current
            result.to_version = result.from_version
            problem = version_problem(current, target, [md.spec_version for md in state.workers])
            if problem:
                result.status = ClusterStatus.FAILED
                result.reason = problem
                raise ClusterFailed(result)
            unchanged = current == target and all(w.spec_version == target for w in state.workers)
            if not unchanged:
                result.changed = True
            state = await self._wait("upgrade_control_plane", request, f"control plane -> {target}")
            result.to_version = state.control_plane.status_version
            await self._wait("upgrade_workers", request, f"workers -> {target}")
            self._set_step("verifying versions")
            report: VersionReport = await workflow.execute_activity(
                "read_cluster_versions",
                VersionCheck(cluster=task.cluster.ref(), version=target),
                result_type=VersionReport,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
            )
        except ActivityError as err:
            failed = activity_failure(err, result)
            if result.changed:
                await self._where_now(request, result)
            raise failed from None
        result.to_version = report.api_version
        if report.problems:
            result.status = ClusterStatus.FAILED
            result.reason = f"after the upgrade to {target}: " + "; ".join(report.problems)
            raise ClusterFailed(result)
        if task.health_gates:
            self._set_step("health gate after")
            await health_gate(task, result, when="after")
        self._set_step("recording the version")
        await record_version(task, result, target)
        result.status = ClusterStatus.SUCCEEDED if result.changed else ClusterStatus.UNCHANGED

    async def _capi(self, activity: str, request: CapiRequest, step: str) -> CapiState:
        self._set_step(step)
        return await workflow.execute_activity(
            activity,
            request,
            result_type=CapiState,
            start_to_close_timeout=KUBE_TIMEOUT,
            retry_policy=KUBE_RETRY,
            summary=step,
        )

    async def _wait(self, activity: str, request: CapiRequest, step: str) -> CapiState:
        self._set_step(step)
        return await workflow.execute_activity(
            activity,
            request,
            result_type=CapiState,
            start_to_close_timeout=timedelta(seconds=request.timeout_seconds + 60),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=KUBE_RETRY,
            summary=step,
        )

    async def _where_now(self, request: CapiRequest, result: ClusterResult) -> None:
        """Best effort: add the versions the cluster is on to a failed result."""
        try:
            state = await self._capi("read_capi_state", request, "reading versions after failure")
        except ActivityError:
            return
        result.to_version = state.control_plane.status_version
        workers = ", ".join(
            f"{w.name} {w.spec_version} {w.updated}/{w.replicas}" for w in state.workers
        )
        result.reason += f" (now: control plane {result.to_version}; workers {workers})"

    def _set_step(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(step)


def version_problem(control_plane: str, target: str, workers: list[str]) -> str:
    """Why the versions Cluster API reports forbid the upgrade; "" when they allow it. An
    unparsable version is a problem too (raising it would fail the workflow task forever)."""
    try:
        return upgrade_problem(control_plane, target) or next(
            (p for version in workers if (p := node_skew_problem(control_plane, version))), ""
        )
    except VersionError as exc:
        return f"Cluster API reports a version that cannot be checked: {exc}"
