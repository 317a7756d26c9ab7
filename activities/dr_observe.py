"""One round of the automatic-failover watch as one activity, and the start of the
failover it decides on.

The round reads the application's record and its clusters' credentials (inventory), the
primary's database as the hub sees it, every standby's database (its view of the source
and whether it could take over), and probes the app through its DNS name; all at once,
each bounded by the probe timeout, so a dark cluster costs one timeout, not several. It
also fences every cluster whose fence is pending and that answers again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)

from activities.database import fence_now, read_state
from activities.dr_probe import probe
from activities.dr_records import require_app
from activities.inventory import fetch_records
from fleet import search
from fleet.dr import (
    DatabaseRef,
    DatabaseState,
    DatabaseWrite,
    DrAppState,
    DrRequest,
    Fencing,
    Observation,
    OpKind,
    ProbeRequest,
    ProbeResult,
    StartFailover,
    WatchSignals,
    WatchState,
)
from fleet.models import ClusterRef, RecordsQuery


def standby_view(standby: DatabaseState, stale_seconds: float) -> bool | None:
    """Whether a standby still receives WAL from its primary: its replication lag stays
    below `stale_seconds` (None: it does not report one, or cannot be read)."""
    if not standby.reachable or standby.lag_seconds is None:
        return None
    return standby.lag_seconds < stale_seconds


@activity.defn
async def observe_app(watch: WatchState) -> Observation:
    client = activity.client()
    state = await require_app(client, watch.app)
    policy, settings = state.policy, state.policy.watch
    timeout = (settings.probe_timeout_seconds, settings.probe_timeout_seconds)
    records = await fetch_records(client, RecordsQuery(names=[m.cluster for m in policy.members]))
    refs = {r.name: r.ref() for r in records}

    def db(cluster: str) -> DatabaseRef:
        return DatabaseRef(
            cluster=refs[cluster], namespace=policy.namespace, name=policy.member(cluster).database
        )

    at = datetime.now(UTC)
    standbys = [
        m.cluster for m in policy.members if m.cluster != state.primary and m.cluster in refs
    ]

    async def read(cluster: str) -> DatabaseState:
        if cluster not in refs:
            return DatabaseState(
                cluster=cluster, name="", reachable=False, reason="not in the inventory"
            )
        return await asyncio.to_thread(read_state, db(cluster), timeout)

    async def client_probe() -> ProbeResult | None:
        if not policy.probe_url:
            return None
        return await probe(
            ProbeRequest(url=policy.probe_url, timeout_seconds=settings.probe_timeout_seconds)
        )

    primary, probed, others = await asyncio.gather(
        read(state.primary), client_probe(), asyncio.gather(*(read(c) for c in standbys))
    )
    fenced = await _apply_pending_fences(state, refs, db, timeout)
    stale = max(3 * settings.interval_seconds, 5.0)
    views = [standby_view(s, stale) for s in others]
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
    if probed is not None and not probed.ok:
        reasons.append(f"client: {probed.reason or probed.status}")
    signals = WatchSignals(
        at=at,
        hub_ok=hub_ok,
        standby_ok=any(known) if known else None,
        client_ok=None if probed is None else probed.ok,
        standby_ready=bool(ready),
        reason="; ".join(reasons),
    )
    return Observation(
        signals=signals,
        primary=state.primary,
        standby=ready[0] if ready else "",
        automatic=policy.automatic,
        operation_running=state.operation is not None,
        last_failover_at=state.last_failover_at,
        health_down=state.health.down,
        settings=settings,
        fenced=fenced,
    )


async def _apply_pending_fences(
    state: DrAppState,
    refs: dict[str, ClusterRef],
    db: object,
    limits: tuple[float, float],
) -> list[str]:
    """Fences each pending cluster that answers; returns those now fenced."""
    done = []
    for cluster in state.pending_fences:
        if cluster not in refs or cluster == state.primary:
            continue
        write = DatabaseWrite(
            db=db(cluster),  # type: ignore[operator]
            fencing=Fencing(app=state.policy.app, holder="dr-watch", epoch=state.epoch),
            fence=True,
        )
        try:
            fenced = await asyncio.to_thread(fence_now, write, limits)
        except Exception as exc:  # still unreachable: the fence stays pending
            activity.logger.info("pending fence of %s not applied yet: %s", cluster, exc)
            continue
        if fenced.fenced:
            activity.logger.warning("fenced returning %s", cluster, extra={"cluster": cluster})
            done.append(cluster)
    return done


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
async def start_failover(req: StartFailover) -> str:
    return await start_run(
        activity.client(),
        OpKind.FAILOVER,
        req.request,
        workflow_id=req.workflow_id,
        task_queue=activity.info().task_queue,
    )
