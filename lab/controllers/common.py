"""Pieces every controller shares: resource keys, timers, conditions, owner references."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import Callable, Hashable
from typing import Any

from lab.store import Obj, ObjectStore, ResourceKey, now_iso

log = logging.getLogger("lab.controllers")

NAMESPACES = ResourceKey("", "namespaces")
NODES = ResourceKey("", "nodes")
PODS = ResourceKey("", "pods")
CONFIGMAPS = ResourceKey("", "configmaps")
SERVICEACCOUNTS = ResourceKey("", "serviceaccounts")
DEPLOYMENTS = ResourceKey("apps", "deployments")
REPLICASETS = ResourceKey("apps", "replicasets")
DAEMONSETS = ResourceKey("apps", "daemonsets")
CRDS = ResourceKey("apiextensions.k8s.io", "customresourcedefinitions")

CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"

# The alphabet Kubernetes uses for generated name suffixes and template hashes.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def safe_hash(value: Any, length: int = 10) -> str:
    """A stable name-safe digest of a JSON-shaped value (like pod-template-hash)."""
    digest = int(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest(), 16)
    out = []
    for _ in range(length):
        digest, rem = divmod(digest, len(_SAFE))
        out.append(_SAFE[rem])
    return "".join(out)


class Timers:
    """Named asyncio timers for one controller; re-arming a name replaces its timer.

    Timers armed before the event loop runs wait until `bind()` (or the first timer armed
    from inside the running loop). Callback errors are logged, never raised into the loop.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handles: dict[Hashable, asyncio.Handle] = {}
        self._pending: dict[Hashable, tuple[float, Callable[[], None]]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        pending, self._pending = self._pending, {}
        for key, (delay, fn) in pending.items():
            self.later(key, delay, fn)

    def later(self, key: Hashable, delay: float, fn: Callable[[], None]) -> None:
        self.cancel(key)
        loop = self._loop or _running_loop()
        if loop is None:
            self._pending[key] = (delay, fn)
            return
        self._loop = loop
        self._handles[key] = loop.call_later(delay, self._fire, key, fn)

    def soon(self, key: Hashable, fn: Callable[[], None]) -> None:
        """Runs `fn` on the next loop iteration unless `key` is already due (coalesces)."""
        if key not in self._handles and key not in self._pending:
            self.later(key, 0, fn)

    def armed(self, key: Hashable) -> bool:
        return key in self._handles or key in self._pending

    def cancel(self, key: Hashable) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._pending.pop(key, None)

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._pending.clear()

    def _fire(self, key: Hashable, fn: Callable[[], None]) -> None:
        self._handles.pop(key, None)
        try:
            fn()
        except Exception:
            log.exception("controller step %r failed", key)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def set_condition(
    conditions: list[Obj],
    type_: str,
    status: str,
    reason: str = "",
    message: str = "",
    *,
    extra: Obj | None = None,
) -> None:
    """Sets a condition in place; timestamps move only when status or reason change, so
    re-running a reconcile that changed nothing writes nothing."""
    now = now_iso()
    for cond in conditions:
        if cond["type"] == type_:
            if cond["status"] != status or cond.get("reason", "") != reason:
                cond["lastTransitionTime"] = now
                if "lastUpdateTime" in cond:
                    cond["lastUpdateTime"] = now
            cond.setdefault("lastTransitionTime", now)  # clients may write conditions without it
            cond.update(status=status, reason=reason, message=message, **(extra or {}))
            _drop_empty(cond)
            return
    cond = {"type": type_, "status": status, "reason": reason, "message": message}
    cond.update(extra or {})
    cond["lastTransitionTime"] = now
    _drop_empty(cond)
    conditions.append(cond)


def _drop_empty(cond: Obj) -> None:
    for k in ("reason", "message", "severity"):
        if cond.get(k) == "":
            del cond[k]


def condition(obj: Obj | None, type_: str) -> Obj | None:
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return None


def owner_ref(owner: Obj, kind: str, api_version: str) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))


def controller_of(obj: Obj) -> Obj | None:
    for ref in obj["metadata"].get("ownerReferences", []):
        if ref.get("controller"):
            return ref
    return None


def write_status(store: ObjectStore, key: ResourceKey, obj: Obj, status: Obj) -> None:
    """Writes `status` to the status subresource when it differs from the stored one."""
    if obj.get("status") == status:
        return
    new = copy.deepcopy(obj)
    new["status"] = status
    store.update(key, new, subresource="status")


def node_ready(node: Obj | None) -> bool:
    cond = condition(node, "Ready")
    return cond is not None and cond["status"] == "True"


def is_control_plane(node: Obj) -> bool:
    return CONTROL_PLANE_ROLE in node["metadata"].get("labels", {})
