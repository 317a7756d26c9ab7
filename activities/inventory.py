"""The inventory seen from outside its entity workflows: updates, queries and listing
through the Temporal client.

Each operation is a plain async function taking a `Client` (used by the CLI, webhooks and
tests) and an activity wrapper using the worker's client (used by workflows, which cannot
send updates themselves). Entity refusals become non-retryable ApplicationErrors keeping
the entity's error type (`ClusterLocked`, `InvalidRequest`, ...) and message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities import metrics
from fleet import search
from fleet.ids import cluster_id, identity_id, onboard_id
from fleet.models import (
    ClusterRecord,
    ClusterRecords,
    ClusterState,
    HealthReport,
    HolderQuery,
    HolderStatus,
    IdentityClaim,
    IdentityState,
    LockGrant,
    LockRelease,
    LockRequest,
    OwnerQuery,
    OwnerStatus,
    Phase,
    RecordsQuery,
    RegisterRequest,
    Registration,
    RetireRequest,
)
from fleet.rollout_models import ClusterAccess, ClusterAccessList, ClusterNames
from fleet.selectors import SelectorError, parse_selector

T = TypeVar("T")

# Queries in flight at once when listing many records.
LIST_CONCURRENCY = 32


def unknown_cluster(name: str) -> ApplicationError:
    return ApplicationError(
        f"no cluster named {name!r} in the inventory; onboard it first",
        type="UnknownCluster",
        non_retryable=True,
    )


async def _update(
    client: Client,
    cluster: str,
    update: str,
    arg: Any,
    result_type: type[T],
    *,
    update_id: str | None = None,
) -> T:
    handle = client.get_workflow_handle(cluster_id(cluster))
    try:
        return await handle.execute_update(update, arg, id=update_id, result_type=result_type)
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise unknown_cluster(cluster) from None
        raise


def _refusal(exc: WorkflowUpdateFailedError) -> ApplicationError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return ApplicationError(str(cause), type="InvalidRequest", non_retryable=True)


# --- client-side operations ---------------------------------------------------------------


async def _update_with_start(
    client: Client,
    start: WithStartWorkflowOperation[Any, Any],
    update: str,
    arg: Any,
    result_type: type[T],
) -> T:
    """Sends `update` to the entity `start` creates if it does not run yet (USE_EXISTING)."""
    try:
        return await client.execute_update_with_start_workflow(
            update, arg, start_workflow_operation=start, result_type=result_type
        )
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from None


async def register(
    client: Client, req: RegisterRequest, *, task_queue: str, lock_check_seconds: int = 300
) -> Registration:
    """Creates the `cluster:<name>` entity if needed (update-with-start) and registers."""
    record = ClusterRecord(name=req.name, credential=req.credential, labels=req.labels)
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        "ClusterEntity",
        ClusterState(record=record, lock_check_seconds=lock_check_seconds),
        id=cluster_id(req.name),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Inventory record of cluster {req.name}",
        static_details="Holds the record and the operation lock; see current details.",
    )
    return await _update_with_start(client, start, "register", req, Registration)


async def claim_identity(client: Client, req: IdentityClaim, *, task_queue: str) -> IdentityState:
    """Claims a kube-system UID for a record through its `cluster-uid:<uid>` run (created on
    first use). Refused with a non-retryable `DuplicateCluster` while another record holds
    it; the workflow id makes two concurrent claims of one UID meet in one run."""
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        "ClusterIdentity",
        IdentityState(uid=req.uid),
        id=identity_id(req.uid),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        task_queue=task_queue,
        static_summary=f"Identity of the cluster with kube-system UID {req.uid}",
        static_details="Admits one inventory record per real cluster; see current details.",
    )
    return await _update_with_start(client, start, "claim", req, IdentityState)


async def identity_owner(client: Client, query: OwnerQuery) -> OwnerStatus:
    """Whether record `query.cluster` still stands for `query.uid`: its record is live with
    that UID, or its onboarding (which claims before it registers) is still running."""
    record = await get_record(client, query.cluster)
    if record is not None and record.phase != Phase.OFFBOARDED and record.uid == query.uid:
        return OwnerStatus(cluster=query.cluster, holds=True, why=f"record is {record.phase}")
    onboarding = await holder_status(client, onboard_id(query.cluster))
    if onboarding.running:
        return OwnerStatus(cluster=query.cluster, holds=True, why="onboarding in progress")
    if record is None:
        why = "no record"
    elif record.phase == Phase.OFFBOARDED:
        why = "record offboarded"
    else:
        why = f"record has UID {record.uid or 'none'}"
    return OwnerStatus(cluster=query.cluster, holds=False, why=why)


async def acquire_lock(
    client: Client, req: LockRequest, *, update_id: str | None = None
) -> LockGrant:
    return await _update(client, req.cluster, "acquire_lock", req, LockGrant, update_id=update_id)


async def release_lock(client: Client, req: LockRelease) -> ClusterRecord | None:
    """Releases if `req.holder` holds the lock; None when the cluster is unknown."""
    try:
        return await _update(client, req.cluster, "release_lock", req, ClusterRecord)
    except ApplicationError as exc:
        if exc.type == "UnknownCluster":
            return None
        raise


async def get_record(client: Client, name: str) -> ClusterRecord | None:
    """The record of `name`, or None when there is no such entity."""
    try:
        return await client.get_workflow_handle(cluster_id(name)).query(
            "record", result_type=ClusterRecord
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def fetch_records(client: Client, query: RecordsQuery) -> list[ClusterRecord]:
    """Records matching `query`, sorted by name. Names are looked up directly; otherwise
    running entities are found through visibility (which lags a write by a moment)."""
    try:
        selector = parse_selector(query.selector)
    except SelectorError as exc:
        raise ApplicationError(str(exc), type="BadSelector", non_retryable=True) from None
    names = list(dict.fromkeys(query.names))
    if not names:
        listing = f'{search.KIND.name} = "cluster" AND ExecutionStatus = "Running"'
        if not query.include_offboarded:
            listing += f' AND {search.PHASE.name} != "{Phase.OFFBOARDED}"'
        names = [wf.id.removeprefix("cluster:") async for wf in client.list_workflows(listing)]
    gate = asyncio.Semaphore(LIST_CONCURRENCY)

    async def one(name: str) -> ClusterRecord | None:
        async with gate:
            return await get_record(client, name)

    found = await asyncio.gather(*(one(n) for n in dict.fromkeys(names)))
    records = [
        r
        for r in found
        if r is not None
        and selector.matches(r.labels)
        and (query.include_offboarded or r.phase != Phase.OFFBOARDED)
    ]
    return sorted(records, key=lambda r: r.name)


async def holder_status(client: Client, workflow_id: str) -> HolderStatus:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return HolderStatus(workflow_id=workflow_id, running=False, status="NOT_FOUND")
        raise
    status = description.status
    return HolderStatus(
        workflow_id=workflow_id,
        running=status == WorkflowExecutionStatus.RUNNING,
        status=status.name if status is not None else "UNKNOWN",
    )


# --- activities ---------------------------------------------------------------------------


@activity.defn
async def check_identity_owner(query: OwnerQuery) -> OwnerStatus:
    return await identity_owner(activity.client(), query)


@activity.defn
async def acquire_cluster_lock(req: LockRequest) -> LockGrant:
    """Takes the lock; with `wait`, heartbeats until granted. A retry of this activity
    re-attaches to the same update instead of queueing twice."""
    info = activity.info()
    update_id = f"lock:{req.holder}:{info.workflow_run_id}:{info.activity_id}"
    call = asyncio.ensure_future(acquire_lock(activity.client(), req, update_id=update_id))
    asked = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({call}, timeout=5)
            if done:
                grant = call.result()
                metrics.LOCK_WAIT_SECONDS.labels(req.operation).observe(time.monotonic() - asked)
                return grant
            activity.heartbeat(f"waiting for the lock of {req.cluster}")
    except ApplicationError as exc:
        if exc.type == "ClusterLocked":
            metrics.LOCK_CONFLICTS.labels(req.operation).inc()
        raise
    finally:
        call.cancel()


@activity.defn
async def release_cluster_lock(req: LockRelease) -> ClusterRecord | None:
    """Idempotent; returns the record after release (None for an unknown cluster)."""
    return await release_lock(activity.client(), req)


@activity.defn
async def get_cluster_records(query: RecordsQuery) -> ClusterRecords:
    return ClusterRecords(records=await fetch_records(activity.client(), query))


@activity.defn
async def list_cluster_names(query: RecordsQuery) -> ClusterNames:
    """Names of the active records matching `query.selector`, from visibility alone (a
    record's labels and phase are search attributes): no query per entity, and an answer
    of names only however large the fleet. Visibility lags a write by a moment."""
    try:
        selector = parse_selector(query.selector)
    except SelectorError as exc:
        raise ApplicationError(str(exc), type="BadSelector", non_retryable=True) from None
    listing = f'{search.KIND.name} = "cluster" AND ExecutionStatus = "Running"'
    listing += f' AND {search.PHASE.name} != "{Phase.OFFBOARDED}"'
    names = []
    async for wf in activity.client().list_workflows(listing):
        pairs = wf.typed_search_attributes.get(search.LABELS) or []
        labels = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        if selector.matches(labels):
            names.append(wf.id.removeprefix("cluster:"))
    return ClusterNames(names=sorted(names))


@activity.defn
async def resolve_clusters(request: ClusterNames) -> ClusterAccessList:
    """How to reach each named cluster, from its record; names without an active record
    are listed as missing (the caller decides what that means)."""
    records = await fetch_records(activity.client(), RecordsQuery(names=request.names))
    found = {r.name: r for r in records}
    return ClusterAccessList(
        clusters=[
            ClusterAccess(
                name=r.name, credential=r.credential, management=r.management, version=r.version
            )
            for r in records
        ],
        missing=[name for name in request.names if name not in found],
    )


@activity.defn
async def record_cluster_health(report: HealthReport) -> None:
    await _update(activity.client(), report.cluster, "record_health", report, ClusterRecord)


@activity.defn
async def retire_cluster(req: RetireRequest) -> ClusterRecord:
    return await _update(activity.client(), req.cluster, "retire", req, ClusterRecord)


@activity.defn
async def describe_lock_holder(query: HolderQuery) -> HolderStatus:
    return await holder_status(activity.client(), query.workflow_id)
