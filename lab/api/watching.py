"""Watch streams: newline-delimited JSON `{"type", "object"}` events over chunked HTTP.

Start points follow the API server: no resourceVersion (or "0") or `sendInitialEvents=true`
first sends the current objects as ADDED; a resourceVersion replays the store's event log
from there, and one older than the log yields a 410 Expired ERROR event. With
`sendInitialEvents` a BOOKMARK annotated `k8s.io/initial-events-end` closes the initial
burst. With selectors, an object that stops matching is sent as DELETED and one that
starts matching as ADDED. The stream ends after `timeoutSeconds` or when the lab stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from lab.api.query import int_param
from lab.api.registry import Resource
from lab.store import ApiError, Event, Obj, ObjectStore

DEFAULT_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 30.0


async def serve_watch(
    request: web.Request,
    *,
    store: ObjectStore,
    res: Resource,
    namespace: str | None,
    matches: Callable[[Obj], bool],
    render: Callable[[Obj], Any],
    status_body: Callable[[ApiError], Obj],
) -> web.StreamResponse:
    """Streams events for `res` until timeout; `render` shapes each object (API version,
    Table); `matches` applies the request's label and field selectors."""
    query = request.query
    rv = query.get("resourceVersion", "")
    timeout = float(int_param(query, "timeoutSeconds") or DEFAULT_TIMEOUT)
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    initial = query.get("sendInitialEvents") == "true"

    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)

    async def send(type_: str, obj: Any) -> None:
        line = json.dumps({"type": type_, "object": obj}, separators=(",", ":"))
        await response.write(line.encode() + b"\n")

    def bookmark(revision: int, *, end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(revision)}
        if end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}

    sent: set[tuple[str, str]] = set()  # objects this watch has shown as matching

    async def forward(event: Event) -> None:
        """Sends the event as the selector sees it: an object leaving the selection is
        DELETED for this watch, one entering it ADDED. On a resumed watch an object not
        yet seen here may have matched before, so its changes pass through as they are."""
        meta = event.object["metadata"]
        ident = (meta.get("namespace", ""), meta["name"])
        was = ident in sent or (not initial_state and matches(event.object))
        if event.type != "DELETED" and matches(event.object):
            sent.add(ident)
            await send(
                "MODIFIED" if was and event.type == "MODIFIED" else "ADDED", render(event.object)
            )
        elif was:
            sent.discard(ident)
            await send("DELETED", render(event.object))

    queue = store.open_watch(res.key, namespace)
    initial_state = initial or rv in ("", "0")
    try:
        last = store.revision
        if initial_state:
            for obj in store.list(res.key, namespace):
                if matches(obj):
                    sent.add((obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
                    await send("ADDED", render(obj))
            if initial and bookmarks:
                await send("BOOKMARK", bookmark(last, end=True))
        else:
            try:
                start = int(rv)
            except ValueError:
                await send(
                    "ERROR",
                    status_body(ApiError(400, "BadRequest", f"invalid resource version {rv!r}")),
                )
                return response
            try:
                backlog = list(store.events_since(res.key, namespace, start))
            except ApiError as exc:
                await send("ERROR", status_body(exc))
                return response
            for ev in backlog:
                await forward(ev)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            wait = min(remaining, BOOKMARK_INTERVAL) if bookmarks else remaining
            try:
                event: Event | None = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if bookmarks and deadline - loop.time() > 0:
                    await send("BOOKMARK", bookmark(store.revision))
                continue
            if event is None:
                break
            if event.resource_version > last:
                await forward(event)
    except ConnectionResetError:
        pass
    finally:
        store.close_watch(queue)
    return response
