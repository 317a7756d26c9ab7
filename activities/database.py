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
import base64
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dr_records import beating, check_epoch
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
# Reading a database that may be dark: short requests.
READ_TIMEOUT = (2.0, 5.0)
CONFLICT_ATTEMPTS = 5
# A DR wait is on the RTO's critical path: look often (each look is one or two requests).
POLL_SECONDS = 0.1
# Where each database's endpoint listens (its `<name>-rw` Service's load balancer), by
# (cluster, namespace, name): kept so a cluster whose API is cut off can still be probed.
_addresses: dict[tuple[str, str, str], str] = {}


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
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ApplicationError(api_error_message(db.cluster.name, exc)) from None


def address(
    db: DatabaseRef, *, timeout: tuple[float, float] = READ_TIMEOUT, refresh: bool = False
) -> str:
    """`host:port` of the database's endpoint: the load balancer of Service `<name>-rw`,
    looked up once and remembered (so it is known while the cluster's API is cut off);
    `refresh` looks it up again (after the remembered one failed)."""
    key = (db.cluster.name, db.namespace, db.name)
    if key in _addresses and not refresh:
        return _addresses[key]
    path = f"/api/v1/namespaces/{db.namespace}/services/{db.name}-rw"
    try:
        service = request(api_client(db.cluster.credential), "GET", path, timeout=timeout)
    except (ApiException, urllib3.exceptions.HTTPError, OSError):
        if key in _addresses:
            return _addresses[key]
        raise
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ports = (ingress[0].get("ports") or []) if ingress else []
    host = (ingress[0].get("ip") or ingress[0].get("hostname")) if ingress else ""
    if not host or not ports:
        raise ApplicationError(
            f"{db.cluster.name}: Service {db.namespace}/{db.name}-rw has no load balancer yet"
        )
    _addresses[key] = f"{host}:{ports[0]['port']}"
    return _addresses[key]


def endpoint_call(
    where: str, host: str, method: str, path: str, *, timeout: float
) -> tuple[int, dict[str, Any]]:
    """One HTTP request to a database endpoint at `where` (host:port) for `host`."""
    body = json.dumps({"seq": 0}).encode() if method == "POST" else None
    req = urllib.request.Request(
        f"http://{where}{path}",
        data=body,
        method=method,
        headers={"Host": host, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": str(exc.reason)}


def state_of(cluster: str, obj: dict[str, Any]) -> DatabaseState:
    """What Flotilla reads from a Cluster object (docs/dr.md lists the fields). The role
    follows CloudNativePG's `IsReplica()`: no `spec.replica`: primary; else `enabled` when
    set; else a replica unless `primary` names this Cluster (`self`, or its name)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    replica = spec.get("replica")
    name = str(meta.get("name", ""))
    if not replica:
        primary_role = True
    elif replica.get("enabled") is not None:
        primary_role = not replica["enabled"]
    else:
        primary_role = replica.get("primary") == (replica.get("self") or name)
    replica = replica or {}
    current = str(status.get("currentPrimary") or "")
    reported = (status.get("instancesReportedState") or {}).get(current) or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    receiver = conditions.get("WALReceiverStreaming")
    token = str(status.get("demotionToken") or "")
    return DatabaseState(
        cluster=cluster,
        name=name,
        designated_primary=str(replica.get("primary") or ""),
        source=str(replica.get("source") or ""),
        is_primary=primary_role and bool(reported.get("isPrimary")),
        ready=ready,
        fenced=bool(_fenced(annotations)),
        current_primary=current,
        demotion_token=token,
        demotion_lsn=token_lsn(token),
        promotion_token=str(replica.get("promotionToken") or ""),
        epoch=_epoch(annotations),
        streaming=None if receiver is None else receiver.get("status") == "True",
        receiver_reason=str((receiver or {}).get("reason") or ""),
        timeline=int(status.get("timelineID") or 0),
        phase=str(status.get("phase") or ""),
        reason=str(status.get("phaseReason") or "")
        or ("" if ready else str((conditions.get("Ready") or {}).get("reason") or "not ready")),
    )


def token_lsn(token: str) -> str:
    """The final LSN a demotion token names (`latestCheckpointREDOLocation`)."""
    if not token:
        return ""
    try:
        data = json.loads(base64.b64decode(token))
        lsn = str(data.get("latestCheckpointREDOLocation") or "")
        parse_lsn(lsn)
    except (ValueError, TypeError, AttributeError):
        return ""
    return lsn


def _with_status(db: DatabaseRef, state: DatabaseState, timeout: tuple[float, float]) -> None:
    """Adds what the database itself says (WAL positions, writable); unknown on failure."""
    if not db.host:
        return
    try:
        try:
            where = address(db, timeout=timeout)
            code, status = endpoint_call(where, db.host, "GET", "/status", timeout=timeout[1])
        except OSError:
            where = address(db, timeout=timeout, refresh=True)
            code, status = endpoint_call(where, db.host, "GET", "/status", timeout=timeout[1])
    except (ApplicationError, ApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
        return
    if code != 200:
        return
    state.written_lsn = _lsn(status.get("lsn"))
    state.replayed_lsn = _lsn(status.get("replayLSN"))
    state.lag_seconds = _float(status.get("lagSeconds"))
    state.writable = bool(status.get("writable"))


def _fenced(annotations: dict[str, str]) -> list[str]:
    try:
        value = json.loads(annotations.get(FENCE_ANNOTATION) or "[]")
    except ValueError:
        return ["?"]  # unreadable: treat as fenced, never as writable
    return [str(v) for v in value] if isinstance(value, list) else ["?"]


def _epoch(annotations: dict[str, str]) -> int:
    text = annotations.get(EPOCH_ANNOTATION, "0")
    return int(text) if text.isdecimal() else 0


def _lsn(value: Any) -> str:
    text = str(value or "")
    try:
        parse_lsn(text)
    except ValueError:
        return ""
    return text


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@activity.defn(no_thread_cancel_exception=True)
def read_database(db: DatabaseRef) -> DatabaseState:
    """The database's state; an unreachable cluster is a state (`reachable=False`), not a
    failure, so the watch and preflights can decide on it."""
    activity.heartbeat()
    return read_state(db)


def read_state(db: DatabaseRef, timeout: tuple[float, float] = READ_TIMEOUT) -> DatabaseState:
    try:
        state = state_of(db.cluster.name, _get(db, timeout=timeout))
    except ApplicationError as exc:
        if exc.type == "DatabaseNotFound":
            raise
        state = DatabaseState(
            cluster=db.cluster.name, name=db.name, reachable=False, reason=exc.message
        )
    # Also when the API is cut off: the database itself may still answer (a partition).
    _with_status(db, state, timeout)
    return state


async def _write(
    req: DatabaseWrite, change: Any, *, what: str, needs_epoch: bool = True
) -> DatabaseState:
    """Check-then-act: epoch current (unless `needs_epoch` is False), object not newer,
    `change(obj)` (True when it changed something), replace with resourceVersion. The
    Kubernetes calls run on a thread (the client blocks)."""
    fencing = req.fencing
    if needs_epoch:
        check = EpochCheck(app=fencing.app, holder=fencing.holder, epoch=fencing.epoch)
        await beating(check_epoch(activity.client(), check))
    return await beating(
        asyncio.to_thread(_replace, req, change, what=what, needs_epoch=needs_epoch)
    )


def _replace(
    req: DatabaseWrite,
    change: Any,
    *,
    what: str,
    needs_epoch: bool,
    timeout: tuple[float, float] = (5.0, 15.0),
) -> DatabaseState:
    """Read, check, change, replace; a conflict (the operator wrote status meanwhile)
    starts again from the read, a few times."""
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return _replace_once(req, change, what=what, needs_epoch=needs_epoch, timeout=timeout)
        except Conflict:
            continue
    try:
        return _replace_once(req, change, what=what, needs_epoch=needs_epoch, timeout=timeout)
    except Conflict:
        raise ApplicationError(f"{req.db.cluster.name}: {req.db.name} keeps changing") from None


class Conflict(Exception):
    pass


def _replace_once(
    req: DatabaseWrite,
    change: Any,
    *,
    what: str,
    needs_epoch: bool,
    timeout: tuple[float, float],
) -> DatabaseState:
    db, fencing = req.db, req.fencing
    obj = _get(db, timeout=timeout)
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    found = _epoch(annotations)
    if needs_epoch and (problem := object_epoch_problem(found, fencing.epoch, f"{db.name}")):
        raise ApplicationError(f"{what} refused: {problem}", type="StaleEpoch", non_retryable=True)
    if not change(obj):
        state = state_of(db.cluster.name, obj)
        _with_status(db, state, READ_TIMEOUT)
        return state
    annotations[EPOCH_ANNOTATION] = str(max(found, fencing.epoch))
    activity.logger.info(
        "%s under epoch %d", what, fencing.epoch, extra={"cluster": db.cluster.name}
    )
    try:
        api = api_client(db.cluster.credential)
        written = request(api, "PUT", _path(db), body=obj, timeout=timeout)
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict() from None
        raise write_error(
            db.cluster.name, exc, refused=f"{what} refused", type="DatabaseRefused"
        ) from None
    state = state_of(db.cluster.name, dict(written))
    _with_status(db, state, READ_TIMEOUT)
    return state


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
    """Re-creates a former primary as a replica of `req.primary`, cloned from `req.peer`
    (CloudNativePG cannot rewind a primary that went past the new timeline's fork: its
    Cluster is deleted, dropping its data, and created again with `bootstrap.pg_basebackup`
    from the peer). The new spec is the peer's with this Cluster's name, so a retry after
    the delete rebuilds the same object. A Cluster already rebuilt under this epoch is left
    alone; an unfenced primary is never deleted."""
    f = req.fencing
    check = EpochCheck(app=f.app, holder=f.holder, epoch=f.epoch)
    await beating(check_epoch(activity.client(), check))
    return await beating(asyncio.to_thread(_rebuild, req))


def _rebuild(req: DatabaseWrite) -> DatabaseState:
    db, epoch = req.db, req.fencing.epoch
    if req.peer is None:
        raise ApplicationError(
            "rebuild needs the peer to clone", type="BadRequest", non_retryable=True
        )
    api = api_client(db.cluster.credential)
    try:
        obj: dict[str, Any] | None = _get(db, timeout=(5.0, 15.0))
    except ApplicationError as exc:
        if exc.type != "DatabaseNotFound":
            raise
        obj = None
    if obj is not None:
        found = state_of(db.cluster.name, obj)
        bootstrap = ((obj.get("spec") or {}).get("bootstrap") or {}).get("pg_basebackup") or {}
        if (
            found.epoch == epoch
            and not found.is_primary
            and found.designated_primary == req.primary
            and bootstrap.get("source") == req.source
        ):
            return found  # rebuilt by an earlier attempt of this step
        if problem := object_epoch_problem(found.epoch, epoch, db.name):
            raise ApplicationError(
                f"rebuild refused: {problem}", type="StaleEpoch", non_retryable=True
            )
        if found.is_primary and not found.fenced:
            raise ApplicationError(
                f"rebuild refused: {db.name} is an unfenced primary",
                type="DatabaseRefused",
                non_retryable=True,
            )
        uid = (obj.get("metadata") or {}).get("uid")
        activity.logger.warning(
            "deleting %s to rebuild it", db.name, extra={"cluster": db.cluster.name}
        )
        try:
            request(api, "DELETE", _path(db), body={"preconditions": {"uid": uid}})
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise write_error(
                    db.cluster.name, exc, refused="rebuild refused", type="DatabaseRefused"
                ) from None
        _wait_gone(db)
    peer = _get(req.peer, timeout=(5.0, 15.0))
    spec = json.loads(json.dumps(peer.get("spec") or {}))
    spec["replica"] = {"self": db.name, "primary": req.primary, "source": req.source}
    spec["bootstrap"] = {"pg_basebackup": {"source": req.source}}
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": "Cluster",
        "metadata": {
            "name": db.name,
            "namespace": db.namespace,
            "annotations": {EPOCH_ANNOTATION: str(epoch)},
        },
        "spec": spec,
    }
    base = f"/apis/{GROUP_VERSION}/namespaces/{db.namespace}/clusters"
    try:
        created = request(api, "POST", base, body=body)
    except ApiException as exc:
        if exc.status == 409:
            raise ApplicationError(f"{db.name} exists again; retrying") from None
        raise write_error(
            db.cluster.name, exc, refused="rebuild refused", type="DatabaseRefused"
        ) from None
    return state_of(db.cluster.name, dict(created))


def _wait_gone(db: DatabaseRef) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _get(db)
        except ApplicationError as exc:
            if exc.type == "DatabaseNotFound":
                return
        activity.heartbeat(f"waiting for {db.name} to be deleted")
        time.sleep(0.2)
    raise ApplicationError(f"{db.cluster.name}: {db.name} is still being deleted")


@activity.defn(no_thread_cancel_exception=True)
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
        elif req.until == "writable":
            done = _write_ok(db)
            waiting = f"{db.name} to acknowledge a write ({state.reason or state.phase})"
        elif req.until == "lsn":
            done = _reached(state.replayed_lsn, req.lsn)
            waiting = f"{db.name} to replay {req.lsn} (at {state.replayed_lsn or '?'})"
        else:
            done = state.ready and not state.is_primary and state.streaming is True
            waiting = f"{db.name} to stream from {state.source} ({state.receiver_reason})"
        progress = (state.phase, state.replayed_lsn, state.ready, state.is_primary)
        return Look(state, done, waiting, progress)

    state = wait_until(
        look,
        cluster=db.cluster.name,
        goal=f"{db.name} {req.until}",
        timeout_seconds=req.timeout_seconds,
        timeout_type="DatabaseTimeout",
        poll_seconds=POLL_SECONDS,
    )
    state.checked_at = datetime.now(UTC)
    return state


def _write_ok(db: DatabaseRef) -> bool:
    """One write through the database's endpoint (`POST /write`, seq 0: not a client's)."""
    try:
        code, _ = endpoint_call(address(db), db.host, "POST", "/write", timeout=READ_TIMEOUT[1])
    except (ApplicationError, ApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
        return False
    return code == 200


def _reached(position: str, goal: str) -> bool:
    if not goal:
        return True
    if not position:
        return False
    return parse_lsn(position) >= parse_lsn(goal)
