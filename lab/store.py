"""In-memory object store for one simulated cluster.

Objects are plain JSON-shaped dicts, exactly as the API serves them. The store owns the
parts of the API contract that do not depend on HTTP: uid, creationTimestamp,
resourceVersion (one monotonically increasing counter per cluster, like etcd's revision),
generation, optimistic concurrency, finalizers/deletionTimestamp, and the event log that
watches replay from.

Callers (the HTTP layer, simulated controllers, the fault injector) never mutate a dict
they got from the store; they deep-copy, change, and write back.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

# How many events each cluster keeps for watch resumption; older resourceVersions get 410 Gone.
EVENT_LOG_SIZE = 2000


@dataclass(frozen=True, order=True)
class ResourceKey:
    """Identifies a resource type: API group ('' for core) and plural resource name."""

    group: str
    resource: str


_NAMESPACES = ResourceKey("", "namespaces")


@dataclass(frozen=True)
class Event:
    type: str  # ADDED | MODIFIED | DELETED
    key: ResourceKey
    object: Obj
    resource_version: int


class ApiError(Exception):
    """An error the HTTP layer turns into a Kubernetes `Status` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}


def not_found(key: ResourceKey, name: str) -> ApiError:
    kind = f"{key.resource}.{key.group}" if key.group else key.resource
    return ApiError(
        404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": key.resource}
    )


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Top-level fields whose change does not bump metadata.generation.
_NON_SPEC_FIELDS = {"metadata", "status", "apiVersion", "kind"}


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in _NON_SPEC_FIELDS}


@dataclass
class _Watcher:
    key: ResourceKey
    namespace: str | None
    queue: asyncio.Queue[Event | None]


@dataclass
class ObjectStore:
    """All objects of one cluster."""

    cluster: str
    _objects: dict[ResourceKey, dict[tuple[str, str], Obj]] = field(default_factory=dict)
    _revision: int = 0
    _events: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENT_LOG_SIZE))
    _watchers: list[_Watcher] = field(default_factory=list)
    _listeners: list[Callable[[Event], None]] = field(default_factory=list)
    _validators: list[Callable[[ResourceKey, Obj | None, Obj], None]] = field(default_factory=list)

    # ---- reads -------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    def get(self, key: ResourceKey, namespace: str, name: str) -> Obj:
        """Returns the object; raises 404 ApiError when absent."""
        obj = self._objects.get(key, {}).get((namespace, name))
        if obj is None:
            raise not_found(key, name)
        return obj

    def find(self, key: ResourceKey, namespace: str, name: str) -> Obj | None:
        return self._objects.get(key, {}).get((namespace, name))

    def list(self, key: ResourceKey, namespace: str | None = None) -> list[Obj]:
        """Objects sorted by (namespace, name); `namespace=None` means all namespaces."""
        bucket = self._objects.get(key, {})
        return [bucket[k] for k in sorted(bucket) if namespace is None or k[0] == namespace]

    def keys(self) -> builtins.list[ResourceKey]:
        return list(self._objects)

    # ---- writes ------------------------------------------------------------------------

    def create(self, key: ResourceKey, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Stores a new object; 409 AlreadyExists if the name is taken.

        `dry_run=True` runs every check and returns the would-be object without storing it.
        """
        meta = obj.setdefault("metadata", {})
        ns, name = meta.get("namespace", ""), meta["name"]
        bucket = self._objects.setdefault(key, {})
        if (ns, name) in bucket:
            kind = f"{key.resource}.{key.group}" if key.group else key.resource
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind} "{name}" already exists',
                {"name": name, "kind": key.resource},
            )
        obj = copy.deepcopy(obj)
        self._admit(key, None, obj)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        if dry_run:
            return obj
        return self._commit("ADDED", key, obj)

    def update(
        self,
        key: ResourceKey,
        obj: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Replaces an object.

        When `obj.metadata.resourceVersion` is set it must match the stored one (409
        Conflict otherwise), as on a real API server. Writes to the `status` subresource
        change only `.status`; other writes keep the stored `.status`. Generation goes up
        when anything outside metadata/status changes. An object with a deletionTimestamp
        whose finalizers become empty is removed. `dry_run=True` returns the would-be
        object without storing it.
        """
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        current = self.get(key, ns, name)
        expected = meta.get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key.resource} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": name, "kind": key.resource},
            )
        new = copy.deepcopy(current)
        if subresource == "status":
            if "status" in obj:
                new["status"] = copy.deepcopy(obj["status"])
        else:
            status = new.get("status")
            new = copy.deepcopy(obj)
            if status is not None:
                new["status"] = status
            else:
                new.pop("status", None)
            # Immutable / server-owned metadata survives any client write.
            for f in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if f in current["metadata"]:
                    new["metadata"][f] = current["metadata"][f]
                else:
                    new["metadata"].pop(f, None)
            if _spec_part(new) != _spec_part(current):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if new == current:
            return current  # a no-op write does not bump resourceVersion
        self._admit(key, current, new)
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not _finalizers(key, new):
            return self._remove(key, new)
        return self._commit("MODIFIED", key, new)

    def delete(self, key: ResourceKey, namespace: str, name: str) -> Obj:
        """Deletes an object, or marks it with deletionTimestamp while finalizers remain
        (for a Namespace, also those in `spec.finalizers`, which the namespace controller
        removes once its content is gone). Returns the removed object, or the marked one.
        """
        current = self.get(key, namespace, name)
        if _finalizers(key, current):
            if current["metadata"].get("deletionTimestamp"):
                return current
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = now_iso()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit("MODIFIED", key, marked)
        return self._remove(key, current)

    # ---- change feed -------------------------------------------------------------------

    def add_validator(self, validator: Callable[[ResourceKey, Obj | None, Obj], None]) -> None:
        """Runs `validator(key, old, new)` before every create (old=None) and update; it
        rejects a write by raising ApiError, like a validating admission webhook."""
        self._validators.append(validator)

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Calls `listener` synchronously after every committed change (for controllers)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Event], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def events_since(self, key: ResourceKey, namespace: str | None, rv: int) -> Iterator[Event]:
        """Logged events newer than `rv`; raises 410 Gone if `rv` predates the log."""
        if self._events and rv < self._events[0].resource_version - 1:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self._revision})")
        for ev in self._events:
            if ev.resource_version > rv and ev.key == key and _in_namespace(ev, namespace):
                yield ev

    def open_watch(self, key: ResourceKey, namespace: str | None) -> asyncio.Queue[Event | None]:
        """A queue receiving future events for `key`; `None` is pushed when the store closes."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._watchers.append(_Watcher(key, namespace, queue))
        return queue

    def close_watch(self, queue: asyncio.Queue[Event | None]) -> None:
        self._watchers = [w for w in self._watchers if w.queue is not queue]

    def close_all_watches(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(None)
        self._watchers.clear()

    # ---- persistence -------------------------------------------------------------------

    def dump(self) -> Obj:
        return {
            "revision": self._revision,
            "objects": [
                {"group": k.group, "resource": k.resource, "items": list(b.values())}
                for k, b in self._objects.items()
            ],
        }

    @classmethod
    def load(cls, cluster: str, data: Obj) -> ObjectStore:
        store = cls(cluster)
        store._revision = int(data["revision"])
        for entry in data["objects"]:
            key = ResourceKey(entry["group"], entry["resource"])
            bucket = store._objects.setdefault(key, {})
            for obj in entry["items"]:
                meta = obj["metadata"]
                bucket[(meta.get("namespace", ""), meta["name"])] = obj
        return store

    # ---- internals ---------------------------------------------------------------------

    def _admit(self, key: ResourceKey, old: Obj | None, new: Obj) -> None:
        for validator in self._validators:
            validator(key, old, new)

    def _commit(self, type_: str, key: ResourceKey, obj: Obj) -> Obj:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        meta = obj["metadata"]
        self._objects.setdefault(key, {})[(meta.get("namespace", ""), meta["name"])] = obj
        self._publish(Event(type_, key, obj, self._revision))
        return obj

    def _remove(self, key: ResourceKey, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._objects.get(key, {}).pop((meta.get("namespace", ""), meta["name"]), None)
        self._revision += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._revision)
        self._publish(Event("DELETED", key, obj, self._revision))
        return obj

    def _publish(self, event: Event) -> None:
        self._events.append(event)
        for w in self._watchers:
            if w.key == event.key and _in_namespace(event, w.namespace):
                w.queue.put_nowait(event)
        for listener in list(self._listeners):
            listener(event)


def _in_namespace(event: Event, namespace: str | None) -> bool:
    return namespace is None or event.object["metadata"].get("namespace", "") == namespace


def _finalizers(key: ResourceKey, obj: Obj) -> bool:
    if obj["metadata"].get("finalizers"):
        return True
    return key == _NAMESPACES and bool((obj.get("spec") or {}).get("finalizers"))
