"""What every per-cluster rollout child shares: the cluster lock, health gates, and how a
child reports failure.

A child that fails raises a non-retryable `ClusterFailed` ApplicationError whose first
detail is its `ClusterResult`, so the Temporal UI shows the child as failed and the parent
still learns exactly what happened (was the cluster changed, what it is on now).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from workflows.common import (
    INVENTORY_RETRY,
    INVENTORY_TIMEOUT,
    KUBE_RETRY,
    root_failure,
)

with workflow.unsafe.imports_passed_through():
    from fleet.models import (
        FactsUpdate,
        Health,
        HealthReport,
        LockGrant,
        LockRelease,
        LockRequest,
        Phase,
    )
    from fleet.rollout_models import ClusterResult, ClusterStatus, ClusterTask

HEALTH_TIMEOUT = timedelta(seconds=120)
# How long a changed cluster may take to report healthy again, and how often it is re-read.
AFTER_SETTLE = timedelta(minutes=5)
SETTLE_POLL = timedelta(seconds=5)


class ClusterFailed(Exception):
    """Raised inside a child to end it with `result` (turned into ApplicationError)."""

    def __init__(self, result: ClusterResult):
        super().__init__(result.reason)
        self.result = result


def failure(result: ClusterResult) -> ApplicationError:
    return ApplicationError(result.reason, result, type="ClusterFailed", non_retryable=True)


def holder() -> str:
    """The lock holder: this child's workflow id (`rollout:<kind>:<id>/<cluster>`)."""
    return workflow.info().workflow_id


async def acquire_lock(
    task: ClusterTask, result: ClusterResult, *, operation: str, phase: Phase | None
) -> None:
    request = LockRequest(
        cluster=task.cluster.name, holder=holder(), operation=operation, phase=phase
    )
    try:
        await workflow.execute_activity(
            "acquire_cluster_lock",
            request,
            result_type=LockGrant,
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
    except ActivityError as err:
        raise activity_failure(err, result) from None


async def release_lock(task: ClusterTask) -> None:
    """Restores the phase the cluster had before the lock (a cluster in maintenance stays
    there). Idempotent; safe to call from `finally` after a cancellation."""
    await workflow.execute_activity(
        "release_cluster_lock",
        LockRelease(cluster=task.cluster.name, holder=holder(), phase=None),
        start_to_close_timeout=INVENTORY_TIMEOUT,
        retry_policy=INVENTORY_RETRY,
    )


async def health_gate(task: ClusterTask, result: ClusterResult, *, when: str) -> None:
    """Fails the child unless the cluster is healthy. Unreachable before any change ends
    the child with status UNREACHABLE, so the parent can skip it or count it, by option.

    Before the change one reading decides. After it the cluster gets AFTER_SETTLE to become
    healthy, re-read every SETTLE_POLL: a change settles through transient unavailability
    (kubeadm rolls kube-proxy after a control-plane upgrade; API servers restart)."""
    settle_until = workflow.now() + AFTER_SETTLE
    while True:
        try:
            report: HealthReport = await workflow.execute_activity(
                "check_cluster_health",
                task.cluster.ref(),
                result_type=HealthReport,
                start_to_close_timeout=HEALTH_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary=f"health gate {when}",
            )
        except ActivityError as err:
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


async def record_version(task: ClusterTask, result: ClusterResult, version: str) -> None:
    try:
        await workflow.execute_activity(
            "update_cluster_facts",
            FactsUpdate(cluster=task.cluster.name, holder=holder(), version=version),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
    except ActivityError as err:
        raise activity_failure(err, result) from None


def activity_failure(err: ActivityError, result: ClusterResult) -> ClusterFailed:
    """The failure to end the child with; a cancellation is re-raised as it is, so the
    child ends cancelled (after its `finally` released the lock)."""
    if is_cancelled_exception(err):
        raise err
    result.status = ClusterStatus.FAILED
    result.reason = root_failure(err).message
    return ClusterFailed(result)
