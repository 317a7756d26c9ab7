"""The skeleton every per-cluster rollout child shares: lock -> health gate -> change ->
verify -> health gate -> record -> release (always, also when cancelled). What `record`
notes (the version the change left) is written with the release, one entity update.

A child subclasses `ClusterChange` and supplies `change` and `verify` (and, where it has
something to write back, `record` and `where_now`). A child that fails raises a
non-retryable `ClusterFailed` ApplicationError whose first detail is its `ClusterResult`,
so the Temporal UI shows the child as failed and the parent still learns exactly what
happened (was the cluster changed, what it is on now).

Short reads of the cluster (health gates; a child's own reads) run as local activities:
on the child's worker, without a round trip through the server's activity queue, so they
follow each other within one workflow task. Steps that wait (a child's `change` polling
Cluster API) stay activities that heartbeat, and so do the lock and the release (which
records the version): they update the cluster's entity workflow on this worker, and a local
activity holds its run's workflow task slot while it waits, so many children at once
could starve the entities they wait for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

from workflows.common import (
    HEALTH_TIMEOUT,
    INVENTORY_RETRY,
    INVENTORY_TIMEOUT,
    KUBE_RETRY,
    root_failure,
)

with workflow.unsafe.imports_passed_through():
    from activities.health import check_cluster_health
    from activities.inventory import (
        acquire_cluster_lock,
        release_cluster_lock,
    )
    from fleet.models import (
        ClusterRef,
        Health,
        HealthReport,
        LockRelease,
        LockRequest,
        Phase,
    )
    from fleet.rollout_models import ClusterAccess, ClusterResult, ClusterStatus, ClusterTask

SETTLE_POLL = timedelta(seconds=5)


class ClusterFailed(Exception):
    """Raised inside a child to end it with `result` (turned into ApplicationError)."""

    def __init__(self, result: ClusterResult):
        super().__init__(result.reason)
        self.result = result


class ClusterChange:
    """Base of per-cluster children. Subclasses are `@workflow.defn` classes whose
    `@workflow.run` method returns `await self.execute(task)`."""

    # The lock's operation name and the phase the record shows while it is held.
    lock_operation: ClassVar[str] = "change"
    lock_phase: ClassVar[Phase | None] = None

    def __init__(self) -> None:
        self._step = "starting"
        self._access: ClusterAccess | None = None
        self._version: str | None = None  # recorded with the release

    @property
    def access(self) -> ClusterAccess:
        """How to reach the cluster, from the lock grant (set once the lock is held)."""
        assert self._access is not None, "the lock is taken first"
        return self._access

    @workflow.query
    def step(self) -> str:
        return self._step

    def set_step(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(step)

    async def execute(self, task: ClusterTask) -> ClusterResult:
        result = ClusterResult(
            cluster=task.cluster.name,
            status=ClusterStatus.RUNNING,
            from_version=task.cluster.version,
            to_version=task.cluster.version,
        )
        try:
            await self._lock(task, result)
            try:
                await self._steps(task, result)
            except ClusterFailed:
                if result.changed:
                    self.set_step("reading where the cluster is now")
                    await self.where_now(task, result)
                raise
            finally:
                self.set_step("releasing the lock")
                await workflow.execute_activity(
                    release_cluster_lock,
                    LockRelease(
                        cluster=task.cluster.name,
                        holder=holder(),
                        phase=None,
                        version=self._version,
                    ),
                    start_to_close_timeout=INVENTORY_TIMEOUT,
                    retry_policy=INVENTORY_RETRY,
                )
        except ClusterFailed as failed:
            raise cluster_failure(failed.result) from None
        return result

    async def _steps(self, task: ClusterTask, result: ClusterResult) -> None:
        if task.health_gates and not task.rollback:
            self.set_step("health gate before")
            await health_gate(task, self.access.ref(), result, when="before")
        await self.change(task, result)
        if result.status == ClusterStatus.UNCHANGED:
            return
        await self.verify(task, result)
        if task.health_gates:
            self.set_step("health gate after")
            await health_gate(task, self.access.ref(), result, when="after")
        await self.record(task, result)
        result.status = ClusterStatus.SUCCEEDED if result.changed else ClusterStatus.UNCHANGED

    async def _lock(self, task: ClusterTask, result: ClusterResult) -> None:
        self.set_step("taking the cluster lock")
        request = LockRequest(
            cluster=task.cluster.name,
            holder=holder(),
            operation=self.lock_operation,
            phase=self.lock_phase,
        )
        try:
            grant = await workflow.execute_activity(
                acquire_cluster_lock,
                request,
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
            )
        except (ActivityError, ApplicationError) as err:
            raise activity_failure(err, result) from None
        if grant.credential is None:  # an entity from before grants carried it
            result.status = ClusterStatus.FAILED
            result.reason = "the inventory record has no credential reference"
            raise ClusterFailed(result)
        self._access = ClusterAccess(
            name=task.cluster.name,
            credential=grant.credential,
            management=grant.management,
            version=task.cluster.version,
        )
        result.access = self._access

    async def change(self, task: ClusterTask, result: ClusterResult) -> None:
        """Makes the change. Sets `result.changed` before the first write, and status
        UNCHANGED (skipping the rest) when the cluster is already at the target."""
        raise NotImplementedError

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        """Checks the change took effect; raises ClusterFailed when it did not."""
        raise NotImplementedError

    async def record(self, task: ClusterTask, result: ClusterResult) -> None:
        """Notes what changed for the inventory, e.g. with `record_version` (default:
        nothing)."""

    def record_version(self, version: str) -> None:
        """The version the inventory records for the cluster when the lock is released."""
        self._version = version

    async def where_now(self, task: ClusterTask, result: ClusterResult) -> None:
        """After a failure on a changed cluster: best effort to learn (and record) what
        the cluster is on now (default: nothing)."""


def cluster_failure(result: ClusterResult) -> ApplicationError:
    """The error a child ends with so the parent receives `result` (see the module doc)."""
    return ApplicationError(result.reason, result, type="ClusterFailed", non_retryable=True)


def holder() -> str:
    """The lock holder: this child's workflow id (`rollout:<kind>:<id>/<cluster>`)."""
    return workflow.info().workflow_id


async def health_gate(
    task: ClusterTask, ref: ClusterRef, result: ClusterResult, *, when: str
) -> None:
    """Fails the child unless the cluster is healthy. Unreachable before any change ends
    the child with status UNREACHABLE, so the parent can skip it or count it, by option.

    Before the change one reading decides. After it the cluster gets `task.settle_seconds`
    to become healthy, re-read every SETTLE_POLL: a change settles through transient
    unavailability (kubeadm rolls kube-proxy after a control-plane upgrade)."""
    settle_until = workflow.now() + timedelta(seconds=task.settle_seconds)
    while True:
        try:
            report: HealthReport = await workflow.execute_local_activity(
                check_cluster_health,
                ref,
                start_to_close_timeout=HEALTH_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary=f"health gate {when}",
            )
        except (ActivityError, ApplicationError) as err:
            raise activity_failure(err, result) from None
        if report.health == Health.HEALTHY:
            return
        if when != "after" or workflow.now() >= settle_until:
            break
        await workflow.sleep(
            SETTLE_POLL, summary=f"let {task.cluster.name} settle: {report.health.value}"
        )
    result.reason = f"{report.health.value} {when} the change: {report.reason or 'no detail'}"
    unreachable = report.health == Health.UNREACHABLE and not result.changed
    result.status = ClusterStatus.UNREACHABLE if unreachable else ClusterStatus.FAILED
    raise ClusterFailed(result)


def activity_failure(err: FailureError, result: ClusterResult) -> ClusterFailed:
    """The failure to end the child with (from an activity's ActivityError, or the bare
    error a local activity may raise); a cancellation is re-raised as it is, so the child
    ends cancelled (after its `finally` released the lock)."""
    if is_cancelled_exception(err):
        raise err
    result.status = ClusterStatus.FAILED
    result.reason = root_failure(err).message
    return ClusterFailed(result)
