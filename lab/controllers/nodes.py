"""Node objects and what happens to them: readiness faults, cordons, kubelet upgrades."""

from __future__ import annotations

import copy

from lab.controllers.common import (
    CONTROL_PLANE_ROLE,
    NODES,
    is_control_plane,
    node_ready,
    set_condition,
)
from lab.store import Obj, ObjectStore, now_iso

_UNREACHABLE = "node.kubernetes.io/unreachable"
# Healthy reason/message of each pressure condition, as kubelet reports them.
_PRESSURE = {
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
}


def node_object(*, cluster: str, name: str, version: str, ip: str, control_plane: bool) -> Obj:
    """A Ready node as kubeadm + kubelet would register it."""
    now = now_iso()
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "lab.standard-4",
        "cluster.x-k8s.io/cluster-name": cluster,
    }
    spec: Obj = {"podCIDR": f"10.244.{ip.rsplit('.', 1)[1]}.0/24", "providerID": f"lab://{name}"}
    if control_plane:
        labels[CONTROL_PLANE_ROLE] = ""
        spec["taints"] = [{"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}]
    resources = {"cpu": "4", "memory": "16393232Ki", "pods": "110", "ephemeral-storage": "100Gi"}
    conditions = [
        {
            "type": type_,
            "status": "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for type_, (reason, message) in _PRESSURE.items()
    ]
    conditions.append(_ready_condition(now))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.8.0-lab",
                "kubeProxyVersion": version,
                "kubeletVersion": version,
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "Ubuntu 24.04.1 LTS",
                "systemUUID": "",
            },
        },
    }


def _ready_condition(now: str) -> Obj:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def workers(store: ObjectStore) -> list[Obj]:
    return [n for n in store.list(NODES) if not is_control_plane(n)]


def make_not_ready(store: ObjectStore, count: int) -> list[str]:
    """Flips the first `count` workers to NotReady (Ready=Unknown, unreachable taints), as
    the node lifecycle controller does when kubelets stop posting status."""
    pool = workers(store)
    if not 0 < count <= len(pool):
        raise ValueError(f"count must be between 1 and {len(pool)} (the cluster's workers)")
    names = []
    for node in pool[:count]:
        node = copy.deepcopy(node)
        taints = [t for t in node["spec"].get("taints", []) if t["key"] != _UNREACHABLE]
        now = now_iso()
        taints += [
            {"key": _UNREACHABLE, "effect": "NoSchedule", "timeAdded": now},
            {"key": _UNREACHABLE, "effect": "NoExecute", "timeAdded": now},
        ]
        node["spec"]["taints"] = taints
        store.update(NODES, node)
        node = copy.deepcopy(store.get(NODES, "", node["metadata"]["name"]))
        for cond in node["status"]["conditions"]:
            set_condition(
                [cond],
                cond["type"],
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
            )
        store.update(NODES, node, subresource="status")
        names.append(node["metadata"]["name"])
    return names


def make_ready(store: ObjectStore) -> None:
    """Restores every NotReady node: kubelet posts status again, taints are lifted."""
    for node in store.list(NODES):
        if node_ready(node):
            continue
        node = copy.deepcopy(node)
        node["spec"]["taints"] = [
            t for t in node["spec"].get("taints", []) if t["key"] != _UNREACHABLE
        ]
        if not node["spec"]["taints"]:
            del node["spec"]["taints"]
        store.update(NODES, node)
        node = copy.deepcopy(store.get(NODES, "", node["metadata"]["name"]))
        for cond in node["status"]["conditions"]:
            if cond["type"] == "Ready":
                set_condition(
                    [cond], "Ready", "True", "KubeletReady", "kubelet is posting ready status"
                )
            else:
                set_condition([cond], cond["type"], "False", *_PRESSURE[cond["type"]])
        store.update(NODES, node, subresource="status")


def set_unschedulable(store: ObjectStore, name: str, unschedulable: bool) -> None:
    """Cordons (`kubectl cordon`) or uncordons a node."""
    node = store.find(NODES, "", name)
    if node is None or bool(node["spec"].get("unschedulable")) == unschedulable:
        return
    node = copy.deepcopy(node)
    if unschedulable:
        node["spec"]["unschedulable"] = True
    else:
        node["spec"].pop("unschedulable", None)
    store.update(NODES, node)


def set_kubelet_version(store: ObjectStore, name: str, version: str) -> None:
    """The node's kubelet (and kube-proxy) now run `version`, as after a node upgrade."""
    node = store.find(NODES, "", name)
    if node is None or node["status"]["nodeInfo"]["kubeletVersion"] == version:
        return
    node = copy.deepcopy(node)
    node["status"]["nodeInfo"].update(kubeletVersion=version, kubeProxyVersion=version)
    store.update(NODES, node, subresource="status")
