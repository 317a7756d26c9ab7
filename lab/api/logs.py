"""`pods/log`: the simulated output of a pod's containers, as the kubelet serves it.

A simulated container writes two lines when it starts (which image, on which node), so
the log follows the pod's status rather than being stored. The kubelet's refusals are
kept: a container that is still waiting answers 400 with its reason (for a failed image
pull, "trying and failing to pull image"), a pod with several containers needs
`container`, and there is never a previous (terminated) instance. Supported parameters:
container, timestamps, tailLines, sinceSeconds, limitBytes, follow (the stream stays
open until the pod is deleted), previous.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from lab.api.query import int_param
from lab.controllers.common import PODS
from lab.controllers.images import INVALID, PULL_BACKOFF, PULL_ERROR
from lab.store import ApiError, Obj, ObjectStore

_PULL_FAILURES = {PULL_ERROR, PULL_BACKOFF}


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _container(pod: Obj, name: str) -> str:
    names = [c["name"] for c in pod["spec"].get("containers", [])]
    pod_name = pod["metadata"]["name"]
    if not name:
        if len(names) != 1:
            raise _bad(
                f"a container name must be specified for pod {pod_name}, "
                f"choose one of: [{' '.join(names)}]"
            )
        return names[0]
    if name not in names:
        raise _bad(f"container {name} is not valid for pod {pod_name}")
    return name


def lines(pod: Obj, container: str) -> list[tuple[str, str]]:
    """(RFC 3339 timestamp, text) per line; ApiError when the container has not started."""
    pod_name = pod["metadata"]["name"]
    statuses = {cs["name"]: cs for cs in (pod.get("status") or {}).get("containerStatuses", [])}
    state = statuses.get(container, {}).get("state") or {"waiting": {"reason": "ContainerCreating"}}
    if "running" not in state:
        reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
        if reason in _PULL_FAILURES:
            reason = "trying and failing to pull image"
        elif reason == INVALID:
            reason = "image can't be pulled"
        raise _bad(f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}')
    started = str(state["running"].get("startedAt", ""))
    spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    node = pod["spec"].get("nodeName", "")
    return [
        (started, f"lab: starting container {container} from image {spec.get('image', '')}"),
        (started, f"lab: container {container} is running on node {node}"),
    ]


async def serve(
    request: web.Request, store: ObjectStore, namespace: str, name: str
) -> web.StreamResponse:
    query = request.query
    pod = store.get(PODS, namespace, name)
    container = _container(pod, query.get("container", ""))
    if query.get("previous") in ("true", "1"):
        raise _bad(f'previous terminated container "{container}" in pod "{name}" not found')
    selected = lines(pod, container)
    since = int_param(query, "sinceSeconds")
    if since > 0:
        now = datetime.now(UTC)
        selected = [
            (t, text)
            for t, text in selected
            if (
                now - datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            ).total_seconds()
            <= since
        ]
    tail = query.get("tailLines")
    if tail is not None:
        count = int_param(query, "tailLines")
        selected = selected[len(selected) - count :] if count > 0 else []
    timestamps = query.get("timestamps") in ("true", "1")
    text = "".join(
        (f"{t.replace('Z', '.000000000Z')} " if timestamps else "") + f"{line}\n"
        for t, line in selected
    ).encode()
    limit = int_param(query, "limitBytes")
    if limit > 0:
        text = text[:limit]
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(text)
    if query.get("follow") in ("true", "1"):
        await _until_deleted(store, namespace, name)
    await response.write_eof()
    return response


async def _until_deleted(store: ObjectStore, namespace: str, name: str) -> None:
    queue = store.open_watch(PODS, namespace)
    try:
        while store.find(PODS, namespace, name) is not None:
            event = await queue.get()
            if event is None:
                return
            if event.type == "DELETED" and event.object["metadata"]["name"] == name:
                return
    finally:
        store.close_watch(queue)
