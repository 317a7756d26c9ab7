"""core/v1 Events written by the simulated controllers, as client-go's EventRecorder does.

An event is named `<involved object name>.<hex nanoseconds>` in the object's namespace
(`default` for cluster-scoped objects, like Node events). A repeat of the same (object,
type, reason, message, source) within the correlation window bumps `count` and
`lastTimestamp` instead of creating a new event. The API server deletes events after an
hour (its `--event-ttl`); the lab does the same when it records, and also keeps at most
`EVENT_LIMIT` per cluster, dropping the oldest, so a busy cluster's memory stays bounded.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict

from lab.store import ApiError, Obj, ObjectStore, ResourceKey, now_iso

EVENTS = ResourceKey("", "events")
EVENT_LIMIT = 300
EVENT_TTL = 3600.0
NORMAL, WARNING = "Normal", "Warning"

_Key = tuple[str, str, str, str, str]


class Recorder:
    """Records events into one cluster's store."""

    def __init__(self, store: ObjectStore, *, limit: int = EVENT_LIMIT, ttl: float = EVENT_TTL):
        self.store = store
        self.limit = limit
        self.ttl = ttl
        # aggregation key -> (namespace, name, monotonic time recorded), oldest first;
        # events restored from a state file count from now
        self._recent: OrderedDict[_Key, tuple[str, str, float]] = OrderedDict()
        now = time.monotonic()
        for event in sorted(store.list(EVENTS), key=lambda e: e.get("lastTimestamp") or ""):
            involved, source = event.get("involvedObject") or {}, event.get("source") or {}
            key = (
                involved.get("uid", ""),
                event.get("type", ""),
                event.get("reason", ""),
                event.get("message", ""),
                source.get("component", "") + involved.get("fieldPath", ""),
            )
            self._recent[key] = (event["metadata"]["namespace"], event["metadata"]["name"], now)

    def record(
        self,
        obj: Obj,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str = "",
        field_path: str = "",
    ) -> None:
        """Records an event about `obj` (a stored object with apiVersion and kind)."""
        meta = obj["metadata"]
        key = (meta.get("uid", ""), type_, reason, message, component + field_path)
        now = time.monotonic()
        self._expire(now)
        known = self._recent.pop(key, None)
        if known is not None:
            event = self.store.find(EVENTS, known[0], known[1])
            if event is not None:
                event = dict(event, count=int(event.get("count", 1)) + 1, lastTimestamp=now_iso())
                self.store.update(EVENTS, event)
                self._recent[key] = known[:2] + (now,)
                return
        namespace = meta.get("namespace") or "default"
        name = f"{meta['name']}.{time.time_ns():x}"
        involved: Obj = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", ""),
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        if field_path:
            involved["fieldPath"] = field_path
        stamp = now_iso()
        source: Obj = {"component": component}
        if host:
            source["host"] = host
        with contextlib.suppress(ApiError):  # the namespace is going away
            self.store.create(
                EVENTS,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": involved,
                    "reason": reason,
                    "message": message,
                    "source": source,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "count": 1,
                    "type": type_,
                    "eventTime": None,
                    "reportingComponent": component,
                    "reportingInstance": host,
                },
            )
            self._recent[key] = (namespace, name, now)
        while len(self._recent) > self.limit:
            self._drop(self._recent.popitem(last=False)[1])

    def _expire(self, now: float) -> None:
        while self._recent:
            key, entry = next(iter(self._recent.items()))
            if now - entry[2] < self.ttl:
                return
            del self._recent[key]
            self._drop(entry)

    def _drop(self, entry: tuple[str, str, float]) -> None:
        with contextlib.suppress(ApiError):
            self.store.delete(EVENTS, entry[0], entry[1])
