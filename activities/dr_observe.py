"""One round of the automatic-failover watch as one activity, the fence that waits for a
returning old primary, and the start of a failover.

A round reads the application's record and its clusters' credentials (inventory), then at
once, each bounded by the probe timeout (a dark cluster costs one timeout): the primary's
database as the hub sees it (through its cluster's API), every standby's database (its
`WALReceiverStreaming` condition: does it still stream from the primary?), and the app as
a client finds it: the target the DNSEndpoint publishes, asked whether it takes writes
(`GET /status` of that database endpoint; `policy.probe_url` instead when set, e.g. a
real app's health URL).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.service import RPCError

from activities.database import READ_TIMEOUT, address, endpoint_call, fence_now, read_state
from activities.dns import read_dns
from activities.dr_probe import probe
from activities.dr_records import require_app
from activities.inventory import fetch_records
from fleet import search
from fleet.dr import (
    AppRef,
    DatabaseRef,
    DatabaseState,
    DatabaseWrite,
    DrAppState,
    DrRequest,
    Fencing,
    Observation,
    OpKind,
    PendingFence,
    ProbeRequest,
    StartFailover,
    WatchSignals,
    WatchState,
    fence_id,
    watch_id,
)
from fleet.models import RecordsQuery

# How often a pending fence tries the returning cluster.
FENCE_POLL = 0.1


def standby_view(standby: DatabaseState) -> bool | None:
    """What a standby says of its source: streaming (True), the source unreachable
    (False); anything else (replication stopped on purpose, diverged, unreadable) abstains."""
    if not standby.reachable or standby.streaming is None:
        return None
    if standby.streaming:
        return True
    return False if standby.receiver_reason == "SourceUnreachable" else None


@activity.defn
async def observe_app(watch: WatchState) -> Observation:
    client = activity.client()
    state = await require_app(client, watch.app)
    policy, settings = state.policy, state.policy.watch
    limit = settings.probe_timeout_seconds
    timeout = (limit, limit)
    records = await fetch_records(client, RecordsQuery(names=[m.cluster for m in policy.members]))
    refs = {r.name: r.ref() for r in records}

    def db(cluster: str) -> DatabaseRef:
        member = policy.member(cluster)
        return DatabaseRef(
            cluster=refs[cluster],
            namespace=policy.namespace,
            name=member.database,
            host=member.endpoint,
        )

    at = datetime.now(UTC)
    standbys = [m.cluster for m in policy.members if m.cluster != state.primary]

    async def read(cluster: str) -> DatabaseState:
        if cluster not in refs:
            return DatabaseState(cluster=cluster, name="", reachable=False, reason="no record")
        return await asyncio.to_thread(read_state, db(cluster), timeout)

    async def client_probe() -> tuple[bool | None, str]:
        if policy.probe_url:
            result = await probe(ProbeRequest(url=policy.probe_url, timeout_seconds=limit))
            return result.ok, result.reason
        return await asyncio.to_thread(_through_dns, state, db, limit)

    primary, (client_ok, client_reason), others = await asyncio.gather(
        read(state.primary), client_probe(), asyncio.gather(*(read(c) for c in standbys))
    )
    views = [standby_view(s) for s in others]
    known = [v for v in views if v is not None]
    ready = [
        s.cluster
        for s in others
        if s.reachable and s.ready and not s.is_primary and s.cluster not in state.pending_fences
    ]
    hub_ok = primary.reachable and primary.is_primary and primary.ready and not primary.fenced
    reasons = []
    if not hub_ok:
        reasons.append(f"hub: {primary.reason or 'not a ready primary'}")
    if client_ok is False:
        reasons.append(f"client: {client_reason}")
    signals = WatchSignals(
        at=at,
        hub_ok=hub_ok,
        standby_ok=any(known) if known else None,
        client_ok=client_ok,
        standby_ready=bool(ready),
        primary_lsn=primary.written_lsn,
        reason="; ".join(reasons),
    )
    fencing = Fencing(app=policy.app, holder="", epoch=state.epoch)
    return Observation(
        signals=signals,
        primary=state.primary,
        standby=ready[0] if ready else "",
        automatic=policy.automatic,
        operation_running=state.operation is not None,
        last_failover_at=state.last_failover_at,
        health_down=state.health.down,
        settings=settings,
        pending=[
            PendingFence(cluster=c, db=db(c), fencing=fencing)
            for c in state.pending_fences
            if c in refs and c != state.primary
        ],
    )


def _through_dns(state: DrAppState, db: object, limit: float) -> tuple[bool | None, str]:
    """Whether the database the DNS record names takes writes, as a client would find it;
    None when the record cannot be read or names no member."""
    policy = state.policy
    try:
        published = read_dns(policy.dns)
    except Exception as exc:  # the management cluster is out of reach: abstain
        return None, f"DNS record unreadable: {exc}"
    member = next((m for m in policy.members if m.endpoint in published.targets), None)
    if member is None:
        return None, f"{policy.dns.dns_name} names no member ({published.targets})"
    ref: DatabaseRef = db(member.cluster)  # type: ignore[operator]
    try:
        where = address(ref, timeout=(limit, limit))
    except Exception as exc:  # where the endpoint listens is unknown: not the client's view
        return None, f"{member.endpoint}: address unknown ({type(exc).__name__})"
    try:
        code, status = endpoint_call(where, ref.host, "GET", "/status", timeout=limit)
    except Exception as exc:
        return False, f"{member.endpoint}: {type(exc).__name__}: {exc}"[:200]
    if code == 200 and status.get("writable"):
        return True, ""
    return False, f"{member.endpoint}: {status.get('error') or 'not writable'} ({code})"


@activity.defn
async def fence_when_back(pending: PendingFence) -> DatabaseState:
    """Tries to fence `pending.db` every FENCE_POLL seconds until it succeeds (the old
    primary is back, and fenced before anything else touches it); heartbeats meanwhile."""
    write = DatabaseWrite(db=pending.db, fencing=pending.fencing, fence=True)
    while True:
        try:
            fenced = await asyncio.to_thread(fence_now, write, READ_TIMEOUT)
        except Exception as exc:
            activity.heartbeat(f"{pending.cluster} not back yet: {exc}"[:200])
            await asyncio.sleep(FENCE_POLL)
            continue
        activity.logger.warning("fenced returning %s", pending.cluster)
        return fenced


async def start_run(
    client: Client, kind: OpKind, request: DrRequest, *, workflow_id: str, task_queue: str
) -> str:
    """Starts a DR run as a top-level workflow (idempotent: an existing id is joined)."""
    from workflows.dr import RUNS

    workflow = RUNS[kind]
    handle = await client.start_workflow(
        workflow.run,  # type: ignore[attr-defined]
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"DR {kind} of {request.app}"
        + (f" to {request.target}" if request.target else ""),
        static_details=request.reason or f"requested by {request.who or 'an operator'}",
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(search.KIND, kind.search_kind)]
        ),
    )
    return handle.id


@activity.defn
async def watch_view(app: AppRef) -> WatchState:
    """The watch's state (its last good round of the primary); empty when it runs not."""
    from workflows.dr_watch import DrWatch

    try:
        return (
            await activity.client()
            .get_workflow_handle(watch_id(app.app))
            .query(DrWatch.state, rpc_timeout=timedelta(seconds=5))
        )
    except (RPCError, WorkflowQueryFailedError):
        return WatchState(app=app.app)


@activity.defn
async def start_fence(pending: PendingFence) -> str:
    """Starts `dr-fence:<app>:<cluster>` unless it runs (DrFence, workflows/dr_watch.py)."""
    from workflows.dr_watch import DrFence

    workflow_id = fence_id(pending.fencing.app, pending.cluster)
    await activity.client().start_workflow(
        DrFence.run,
        pending,
        id=workflow_id,
        task_queue=activity.info().task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Fence {pending.cluster} of {pending.fencing.app} when it returns",
    )
    return workflow_id


@activity.defn
async def start_failover(req: StartFailover) -> str:
    return await start_run(
        activity.client(),
        OpKind.FAILOVER,
        req.request,
        workflow_id=req.workflow_id,
        task_queue=activity.info().task_queue,
    )
