"""metrics.k8s.io/v1beta1 NodeMetrics and PodMetrics, computed from the simulation.

As metrics-server reports them: running pods only, one usage per container; a node's
usage is its system overhead plus its pods'; NotReady nodes (kubelet unreachable) have
no metrics. Usage figures are stable per pod (derived from its uid), in the units
metrics-server uses (CPU in nanocores, memory in Ki).
"""

from __future__ import annotations

import zlib

from lab.api.registry import Resource
from lab.controllers.common import NODES, PODS, node_ready
from lab.store import ApiError, Obj, ObjectStore, now_iso

WINDOW = "20.005s"
_NODE_CPU, _NODE_MEMORY_KI = 180_000_000, 900 * 1024  # kubelet, runtime, system daemons


def _container_usage(pod: Obj, container: str) -> tuple[int, int]:
    """(nanocores, KiB) for one container of a running pod."""
    seed = zlib.crc32(f"{pod['metadata'].get('uid', '')}/{container}".encode())
    return 1_000_000 + seed % 24_000_000, 8 * 1024 + (seed >> 8) % (56 * 1024)


def _usage(cpu: int, memory_ki: int) -> Obj:
    return {"cpu": f"{cpu}n", "memory": f"{memory_ki}Ki"}


def _running(store: ObjectStore, namespace: str | None = None) -> list[Obj]:
    return [
        p for p in store.list(PODS, namespace) if (p.get("status") or {}).get("phase") == "Running"
    ]


def _meta(obj: Obj) -> Obj:
    meta = obj["metadata"]
    out: Obj = {"name": meta["name"], "creationTimestamp": now_iso()}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    if meta.get("labels"):
        out["labels"] = meta["labels"]
    return out


def pod_metrics(pod: Obj) -> Obj:
    containers = [
        {"name": c["name"], "usage": _usage(*_container_usage(pod, c["name"]))}
        for c in pod["spec"].get("containers", [])
    ]
    return {
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": _meta(pod),
        "timestamp": now_iso(),
        "window": WINDOW,
        "containers": containers,
    }


def node_metrics(node: Obj, pods: list[Obj]) -> Obj:
    cpu, memory = _NODE_CPU, _NODE_MEMORY_KI
    for pod in pods:
        if pod["spec"].get("nodeName") == node["metadata"]["name"]:
            for c in pod["spec"].get("containers", []):
                used = _container_usage(pod, c["name"])
                cpu, memory = cpu + used[0], memory + used[1]
    return {
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": _meta(node),
        "timestamp": now_iso(),
        "window": WINDOW,
        "usage": _usage(cpu, memory),
    }


def collect(store: ObjectStore, res: Resource, namespace: str | None) -> list[Obj]:
    """Every NodeMetrics or PodMetrics (of `namespace`, or all namespaces)."""
    if res.kind == "NodeMetrics":
        pods = _running(store)
        return [node_metrics(n, pods) for n in store.list(NODES) if node_ready(n)]
    return [pod_metrics(p) for p in _running(store, namespace)]


def find(store: ObjectStore, res: Resource, namespace: str, name: str) -> Obj:
    """One NodeMetrics or PodMetrics; 404 when the node or pod has none."""
    for item in collect(store, res, namespace or None):
        if item["metadata"]["name"] == name:
            return item
    raise ApiError(
        404,
        "NotFound",
        f'{res.plural}.{res.group} "{name}" not found',
        {"name": name, "group": res.group, "kind": res.plural},
    )
