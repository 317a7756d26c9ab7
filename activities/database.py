"""CloudNativePG `Cluster` objects (postgresql.cnpg.io/v1) in a distributed topology: read,
fence, demote, promote, rebuild, wait.

Every write is check-then-act under a fencing epoch (fleet/dr.py): it first asks the
application's DR record whether the run's epoch is current (`StaleEpoch`, non-retryable,
otherwise), reads the object, refuses when the object carries a newer epoch
(`EPOCH_ANNOTATION`), and replaces it with its resourceVersion (a concurrent change gives
409 and the activity retries from the read). Writing what is already there is a no-op, so a
retried step is safe. Fencing is the one write allowed without a current epoch: it can only
take writes away, never make a second primary.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dr_records import check_epoch
from activities.kube import api_client, api_error_message, request, write_error
from activities.polling import Look, wait_until
from fleet.dr import (
    EPOCH_ANNOTATION,
    FENCE_ANNOTATION,
    DatabaseRef,
    DatabaseState,
    DatabaseWait,
    DatabaseWrite,
    EpochCheck,
)
from fleet.dr_rules import object_epoch_problem, parse_lsn

GROUP_VERSION = "postgresql.cnpg.io/v1"
# Reading a database that may be dark: one short request.
READ_TIMEOUT = (2.0, 5.0)


def _path(db: DatabaseRef) -> str:
    return f"/apis/{GROUP_VERSION}/namespaces/{db.namespace}/clusters/{db.name}"


def _get(db: DatabaseRef, *, timeout: tuple[float, float] = READ_TIMEOUT) -> dict[str, Any]:
    try:
        return dict(request(api_client(db.cluster.credential), "GET", _path(db), timeout=timeout))
    except ApiException as exc:
        if exc.status == 404:
            raise ApplicationError(
                f"{db.cluster.name}: no CloudNativePG Cluster {db.namespace}/{db.name}",
                type="DatabaseNotFound",
                non_retryable=True,
            ) from None
        raise ApplicationError(api_error_message(db.cluster.name, exc)) from None


def state_of(cluster: str, obj: dict[str, Any]) -> DatabaseState:
    """What Flotilla reads from a Cluster object (see docs/dr.md for each field)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    replica = spec.get("replica") or {}
    name = str(meta.get("name", ""))
    me = replica.get("self") or name
    designated = str(replica.get("primary") or "")
    designated_self = designated == me if designated else not replica.get("enabled", False)
    current = str(status.get("currentPrimary") or "")
    reported = (status.get("instancesReportedState") or {}).get(current) or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    return DatabaseState(
        cluster=cluster,
        name=name,
        designated_primary=designated,
        source=str(replica.get("source") or ""),
        is_primary=designated_self and bool(reported.get("isPrimary")),
        ready=ready,
        fenced=bool(_fenced(annotations)),
        current_primary=current,
        demotion_token=str(status.get("demotionToken") or ""),
        promotion_token=str(replica.get("promotionToken") or ""),
        epoch=_epoch(annotations),
        written_lsn=_lsn(status, "writtenLSN"),
        replayed_lsn=_lsn(status, "replayedLSN"),
        lag_seconds=_float(status.get("replicationLagSeconds")),
        timeline=int(status.get("timelineID") or 0),
        phase=str(status.get("phase") or ""),
        reason="" if ready else str((conditions.get("Ready") or {}).get("message") or "not ready"),
    )


def _fenced(annotations: dict[str, str]) -> list[str]:
    try:
        value = json.loads(annotations.get(FENCE_ANNOTATION) or "[]")
    except ValueError:
        return ["?"]  # unreadable: treat as fenced, never as writable
    return [str(v) for v in value] if isinstance(value, list) else ["?"]


def _epoch(annotations: dict[str, str]) -> int:
    text = annotations.get(EPOCH_ANNOTATION, "0")
    return int(text) if text.isdecimal() else 0


def _lsn(status: dict[str, Any], field: str) -> str:
    value = str(status.get(field) or "")
    try:
        parse_lsn(value)
    except ValueError:
        return ""
    return value


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@activity.defn
def read_database(db: DatabaseRef) -> DatabaseState:
    """The database's state; an unreachable cluster is a state (`reachable=False`), not a
    failure, so the watch and preflights can decide on it."""
    return read_state(db)


def read_state(db: DatabaseRef, timeout: tuple[float, float] = READ_TIMEOUT) -> DatabaseState:
    try:
        return state_of(db.cluster.name, _get(db, timeout=timeout))
    except ApplicationError as exc:
        if exc.type == "DatabaseNotFound":
            raise
        return DatabaseState(
            cluster=db.cluster.name, name=db.name, reachable=False, reason=exc.message
        )


async def _write(
    req: DatabaseWrite, change: Any, *, what: str, needs_epoch: bool = True
) -> DatabaseState:
    """Check-then-act: epoch current (unless `needs_epoch` is False), object not newer,
    `change(obj)` (True when it changed something), replace with resourceVersion. The
    Kubernetes calls run on a thread (the client blocks)."""
    fencing = req.fencing
    if needs_epoch:
        check = EpochCheck(app=fencing.app, holder=fencing.holder, epoch=fencing.epoch)
        await check_epoch(activity.client(), check)
    return await asyncio.to_thread(_replace, req, change, what=what, needs_epoch=needs_epoch)


def _replace(
    req: DatabaseWrite,
    change: Any,
    *,
    what: str,
    needs_epoch: bool,
    timeout: tuple[float, float] = (5.0, 15.0),
) -> DatabaseState:
    db, fencing = req.db, req.fencing
    obj = _get(db, timeout=timeout)
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    found = _epoch(annotations)
    if needs_epoch and (problem := object_epoch_problem(found, fencing.epoch, f"{db.name}")):
        raise ApplicationError(f"{what} refused: {problem}", type="StaleEpoch", non_retryable=True)
    if not change(obj):
        return state_of(db.cluster.name, obj)
    annotations[EPOCH_ANNOTATION] = str(max(found, fencing.epoch))
    activity.logger.info(
        "%s under epoch %d", what, fencing.epoch, extra={"cluster": db.cluster.name}
    )
    try:
        api = api_client(db.cluster.credential)
        written = request(api, "PUT", _path(db), body=obj, timeout=timeout)
    except ApiException as exc:
        if exc.status == 409:
            raise ApplicationError(
                f"{db.cluster.name}: {db.name} changed meanwhile; retrying"
            ) from None
        raise write_error(
            db.cluster.name, exc, refused=f"{what} refused", type="DatabaseRefused"
        ) from None
    return state_of(db.cluster.name, dict(written))


@activity.defn
async def fence_database(req: DatabaseWrite) -> DatabaseState:
    """`req.fence`: fence every instance (`cnpg.io/fencedInstances: ["*"]`, no epoch
    needed) or lift the fence (epoch checked: it gives writes back)."""
    what = "fence" if req.fence else "unfence"
    return await _write(
        req, _fence_change(req.fence), what=f"{what} {req.db.name}", needs_epoch=not req.fence
    )


def fence_now(req: DatabaseWrite, timeout: tuple[float, float]) -> DatabaseState:
    """Fences at once from a thread (the watch applying a pending fence)."""
    return _replace(
        req, _fence_change(True), what=f"fence {req.db.name}", needs_epoch=False, timeout=timeout
    )


def _fence_change(fence: bool) -> Any:
    def change(obj: dict[str, Any]) -> bool:
        annotations = obj["metadata"]["annotations"]
        fenced = _fenced(annotations)
        if fence:
            if fenced == ["*"]:
                return False
            annotations[FENCE_ANNOTATION] = json.dumps(["*"])
            return True
        if not fenced:
            return False
        annotations.pop(FENCE_ANNOTATION, None)
        return True

    return change


def _set_replica(req: DatabaseWrite, *, token: bool) -> Any:
    def change(obj: dict[str, Any]) -> bool:
        replica = obj.setdefault("spec", {}).setdefault("replica", {})
        wanted = {"primary": req.primary}
        if req.source:
            wanted["source"] = req.source
        if token:
            wanted["promotionToken"] = req.promotion_token
        if all(replica.get(k, "") == v for k, v in wanted.items()):
            return False
        replica.update({k: v for k, v in wanted.items() if v or k == "promotionToken"})
        if token and not req.promotion_token:
            replica.pop("promotionToken", None)
        return True

    return change


@activity.defn
async def demote_database(req: DatabaseWrite) -> DatabaseState:
    """`spec.replica.primary` (and `source`) to the new primary: CloudNativePG demotes this
    Cluster and publishes `status.demotionToken`."""
    return await _write(req, _set_replica(req, token=False), what=f"demote {req.db.name}")


@activity.defn
async def promote_database(req: DatabaseWrite) -> DatabaseState:
    """`spec.replica.primary` to this Cluster, with `promotionToken` (a switchover: it
    replays up to the token's position first) or without (a failover)."""
    return await _write(req, _set_replica(req, token=True), what=f"promote {req.db.name}")


@activity.defn
async def rebuild_replica(req: DatabaseWrite) -> DatabaseState:
    """Makes a former primary a replica of `req.primary` again (`spec.replica.primary` and
    `source`; a stale promotion token is dropped)."""

    def change(obj: dict[str, Any]) -> bool:
        changed = _set_replica(req, token=False)(obj)
        replica = obj["spec"]["replica"]
        if "promotionToken" in replica:
            replica.pop("promotionToken")
            changed = True
        return bool(changed)

    return await _write(req, change, what=f"rebuild {req.db.name} as a replica")


@activity.defn
def wait_database(req: DatabaseWait) -> DatabaseState:
    """Polls until the database is `until` (see DatabaseWait), heartbeating."""
    db = req.db

    def look() -> Look[DatabaseState]:
        state = read_database(db)
        if not state.reachable:
            return Look(state, False, f"{db.name} to answer ({state.reason})", state.reason)
        if req.until == "promoted":
            done = state.is_primary and state.ready
            waiting = f"{db.name} to be a ready primary ({state.phase or state.reason})"
        elif req.until == "demoted":
            done = bool(state.demotion_token) and not state.is_primary
            waiting = f"{db.name} to publish its demotion token"
        elif req.until == "lsn":
            done = _reached(state.replayed_lsn, req.lsn)
            waiting = f"{db.name} to replay {req.lsn} (at {state.replayed_lsn or '?'})"
        else:
            done = state.ready and not state.is_primary and state.source == state.designated_primary
            waiting = f"{db.name} to replicate from {state.designated_primary}"
        progress = (state.phase, state.replayed_lsn, state.ready, state.is_primary)
        return Look(state, done, waiting, progress)

    return wait_until(
        look,
        cluster=db.cluster.name,
        goal=f"{db.name} {req.until}",
        timeout_seconds=req.timeout_seconds,
        timeout_type="DatabaseTimeout",
    )


def _reached(position: str, goal: str) -> bool:
    if not goal:
        return True
    if not position:
        return False
    return parse_lsn(position) >= parse_lsn(goal)
