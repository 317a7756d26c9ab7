"""Helpers every Flotilla workflow shares: retry policies, activity timeouts, turning an
activity failure into a readable workflow failure, and the operation search attributes."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from fleet import search

# Kubernetes calls: a few quick retries; activities stay idempotent so repeats are safe.
KUBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=5,
)
# Reaching a cluster for the first time: bounded so a dead cluster fails in about a minute.
PROBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=5,
)
# Talking to Temporal itself (entity updates, visibility): retry for a good while.
INVENTORY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=20,
)

KUBE_TIMEOUT = timedelta(seconds=60)
INVENTORY_TIMEOUT = timedelta(seconds=30)
HEARTBEAT = timedelta(seconds=20)
# A health reading: a few list calls, heartbeating, so a crashed worker is noticed fast.
HEALTH_TIMEOUT = timedelta(seconds=120)
HEALTH_HEARTBEAT = HEARTBEAT

# A keyword-list search attribute value is limited in size (2 KB by default).
_CLUSTERS_ATTRIBUTE_BYTES = 1800


def operation_attributes(kind: str, clusters: list[str]) -> None:
    """Upserts KIND and CLUSTERS for an operation run (CLUSTERS truncated to fit)."""
    names: list[str] = []
    size = 0
    for name in clusters:
        size += len(name) + 3
        if size > _CLUSTERS_ATTRIBUTE_BYTES:
            break
        names.append(name)
    workflow.upsert_search_attributes(
        [search.KIND.value_set(kind), search.CLUSTERS.value_set(names)]
    )


def root_failure(err: BaseException) -> ApplicationError:
    """A non-retryable ApplicationError carrying the innermost failure's message and type,
    so a failed operation reads "cluster x is locked by ..." rather than "activity failed".

    A cancellation is re-raised as it is, so a cancelled run ends cancelled, not failed."""
    if is_cancelled_exception(err):
        raise err
    cause: BaseException = err
    while isinstance(cause, FailureError) and cause.cause is not None:
        if isinstance(cause, ApplicationError) and not isinstance(cause.cause, ApplicationError):
            break
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    if isinstance(err, ActivityError):
        return ApplicationError(
            f"{err.activity_type} failed: {cause}", type="ActivityFailed", non_retryable=True
        )
    return ApplicationError(str(cause), type=type(cause).__name__, non_retryable=True)
