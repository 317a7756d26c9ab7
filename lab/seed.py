"""The objects of a freshly provisioned cluster, created already settled.

Every workload cluster (and mgmt) starts like a new kubeadm cluster: system namespaces,
a control-plane node and `nodes - 1` workers, default service accounts, the
kubeadm-config ConfigMap (the version `/version` reports), and coredns + kube-proxy
available. Seeding writes final states directly, without waiting on controllers.
"""

from __future__ import annotations

from lab.controllers.common import (
    CONFIGMAPS,
    DAEMONSETS,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    SERVICEACCOUNTS,
)
from lab.controllers.nodes import node_object
from lab.controllers.workloads import WorkloadController
from lab.store import Obj, ObjectStore

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
KUBEADM_CONFIG = "kubeadm-config"


def cluster_configuration(*, name: str, version: str) -> str:
    """kubeadm's ClusterConfiguration document, as stored in kubeadm-config."""
    return (
        "apiServer: {}\n"
        "apiVersion: kubeadm.k8s.io/v1beta3\n"
        f"clusterName: {name}\n"
        "controllerManager: {}\n"
        "dns: {}\n"
        "etcd:\n  local:\n    dataDir: /var/lib/etcd\n"
        "imageRepository: registry.k8s.io\n"
        "kind: ClusterConfiguration\n"
        f"kubernetesVersion: {version}\n"
        "networking:\n  dnsDomain: cluster.local\n  podSubnet: 10.244.0.0/16\n"
        "  serviceSubnet: 10.96.0.0/12\n"
        "scheduler: {}\n"
    )


def seed(store: ObjectStore, *, name: str, version: str, nodes: int) -> None:
    for ns in SYSTEM_NAMESPACES:
        store.create(
            NAMESPACES,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )
        store.create(
            SERVICEACCOUNTS,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": ns},
            },
        )
    names = [f"{name}-cp-0"] + [f"{name}-md-0-{i}" for i in range(max(nodes - 1, 0))]
    for i, node in enumerate(names):
        store.create(
            NODES,
            node_object(
                cluster=name,
                name=node,
                version=version,
                ip=f"10.0.0.{10 + i}",
                control_plane=i == 0,
            ),
        )
    store.create(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": KUBEADM_CONFIG, "namespace": "kube-system"},
            "data": {"ClusterConfiguration": cluster_configuration(name=name, version=version)},
        },
    )
    store.create(DEPLOYMENTS, _coredns())
    store.create(DAEMONSETS, _kube_proxy(version))
    settle = WorkloadController(store, instant=True)
    settle.reconcile_deployment("kube-system", "coredns")
    settle.reconcile_daemonset("kube-system", "kube-proxy")


def _coredns() -> Obj:
    labels = {"k8s-app": "kube-dns"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1},
            },
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 10,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "containers": [
                        {
                            "name": "coredns",
                            "image": "registry.k8s.io/coredns/coredns:v1.11.3",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            ],
                        }
                    ],
                    "tolerations": [
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
                    ],
                },
            },
        },
    }


def _kube_proxy(version: str) -> Obj:
    labels = {"k8s-app": "kube-proxy"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "containers": [
                        {
                            "name": "kube-proxy",
                            "image": kube_proxy_image(version),
                            "command": ["/usr/local/bin/kube-proxy"],
                        }
                    ],
                    "tolerations": [{"operator": "Exists"}],
                },
            },
        },
    }


def kube_proxy_image(version: str) -> str:
    return f"registry.k8s.io/kube-proxy:{version}"
