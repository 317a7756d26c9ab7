"""Workload and node behaviour of a simulated cluster, driven in-process through its store."""

from __future__ import annotations

import copy

from lab.controllers.common import (
    DAEMONSETS,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    SERVICEACCOUNTS,
    condition,
)
from lab.simulation import control_plane_version
from lab.store import Event, ObjectStore
from tests.lab.simhelpers import cond, running_fleet

C = "eu-dev-1"


def deployment(name: str, image: str, *, replicas: int = 3, deadline: int = 600) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def rollout_complete(store: ObjectStore, name: str, ns: str = "default") -> bool:
    """`kubectl rollout status` semantics for a Deployment."""
    d = store.get(DEPLOYMENTS, ns, name)
    s, want = d.get("status", {}), d["spec"].get("replicas", 1)
    return (
        s.get("observedGeneration") == d["metadata"]["generation"]
        and s.get("updatedReplicas", 0) == want
        and s.get("replicas", 0) == want
        and s.get("availableReplicas", 0) == want
    )


def pods_of(store: ObjectStore, app: str) -> list[dict]:
    return [p for p in store.list(PODS, "default") if p["metadata"]["labels"].get("app") == app]


def edit(store: ObjectStore, key, ns: str, name: str, change) -> None:
    obj = copy.deepcopy(store.get(key, ns, name))
    change(obj)
    store.update(key, obj)


async def test_seeded_cluster_looks_like_a_fresh_kubeadm_cluster() -> None:
    async with running_fleet(C, nodes=4) as fleet:
        store = fleet.stores[C]
        names = {n["metadata"]["name"] for n in store.list(NAMESPACES)}
        assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
        assert all(n["status"]["phase"] == "Active" for n in store.list(NAMESPACES))
        assert len(store.list(SERVICEACCOUNTS)) == 4
        nodes = store.list(NODES)
        assert [n["metadata"]["name"] for n in nodes] == [
            f"{C}-cp-0",
            f"{C}-md-0-0",
            f"{C}-md-0-1",
            f"{C}-md-0-2",
        ]
        assert "node-role.kubernetes.io/control-plane" in nodes[0]["metadata"]["labels"]
        for node in nodes:
            assert cond(node, "Ready")["status"] == "True"
            assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.30.6"
            assert node["status"]["capacity"]["pods"] == "110"
        assert control_plane_version(store) == "v1.30.6"
        assert rollout_complete(store, "coredns", "kube-system")
        proxy = store.get(DAEMONSETS, "kube-system", "kube-proxy")["status"]
        assert proxy["desiredNumberScheduled"] == proxy["numberAvailable"] == 4
        on_nodes = {
            p["spec"]["nodeName"]
            for p in store.list(PODS, "kube-system")
            if p["metadata"]["name"].startswith("kube-proxy")
        }
        assert on_nodes == {n["metadata"]["name"] for n in nodes}


async def test_deployment_creates_pods_and_becomes_available() -> None:
    async with running_fleet(C) as fleet:
        store = fleet.stores[C]
        store.create(DEPLOYMENTS, deployment("web", "nginx:1.27"))
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        d = store.get(DEPLOYMENTS, "default", "web")
        assert cond(d, "Available")["reason"] == "MinimumReplicasAvailable"
        assert cond(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
        pods = pods_of(store, "web")
        assert len(pods) == 3
        assert all(p["status"]["phase"] == "Running" for p in pods)
        assert all(p["spec"]["nodeName"] for p in pods)
        [rs] = store.list(REPLICASETS, "default")
        assert rs["status"]["readyReplicas"] == 3
        assert all(
            p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"] for p in pods
        )


async def test_client_written_condition_without_timestamps_does_not_stop_reconcile() -> None:
    async with running_fleet(C) as fleet:
        store = fleet.stores[C]
        store.create(DEPLOYMENTS, deployment("web", "nginx:1.27"))
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        d = copy.deepcopy(store.get(DEPLOYMENTS, "default", "web"))
        # Same status and reason the controller keeps, so it never rewrites the timestamps.
        d["status"]["conditions"] = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
        ]
        store.update(DEPLOYMENTS, d, subresource="status")

        def change(d: dict) -> None:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"

        edit(store, DEPLOYMENTS, "default", "web", change)
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        assert cond(store.get(DEPLOYMENTS, "default", "web"), "Available")["status"] == "True"


async def test_rolling_update_replaces_pods_gradually() -> None:
    async with running_fleet(C) as fleet:
        store = fleet.stores[C]
        store.create(DEPLOYMENTS, deployment("web", "nginx:1.27", replicas=4))
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        seen: list[tuple[int, int]] = []  # (updatedReplicas, availableReplicas) per write

        def record(event: Event) -> None:
            if event.key == DEPLOYMENTS and event.object["metadata"]["name"] == "web":
                status = event.object.get("status", {})
                seen.append((status.get("updatedReplicas", 0), status.get("availableReplicas", 0)))

        store.add_listener(record)

        def change(d: dict) -> None:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"

        edit(store, DEPLOYMENTS, "default", "web", change)
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        assert any(0 < updated < 4 for updated, _ in seen), seen  # grew step by step
        assert min(available for _, available in seen) >= 3  # maxUnavailable 25% of 4
        pods = pods_of(store, "web")
        assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.28"}
        assert len(pods) == 4
        d = store.get(DEPLOYMENTS, "default", "web")
        assert d["status"]["observedGeneration"] == d["metadata"]["generation"] == 2
        revisions = sorted(
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            for rs in store.list(REPLICASETS, "default")
        )
        assert revisions == ["1", "2"]


async def test_rollout_restart_and_scaling() -> None:
    async with running_fleet(C) as fleet:
        store = fleet.stores[C]
        store.create(DEPLOYMENTS, deployment("web", "nginx:1.27", replicas=2))
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        before = {p["metadata"]["name"] for p in pods_of(store, "web")}

        def restart(d: dict) -> None:
            annotations = d["spec"]["template"]["metadata"].setdefault("annotations", {})
            annotations["kubectl.kubernetes.io/restartedAt"] = "2026-01-01T00:00:00Z"

        edit(store, DEPLOYMENTS, "default", "web", restart)
        await fleet.eventually(
            lambda: (
                rollout_complete(store, "web")
                and not before & {p["metadata"]["name"] for p in pods_of(store, "web")}
            )
        )

        def scale(n: int):
            return lambda d: d["spec"].update(replicas=n)

        edit(store, DEPLOYMENTS, "default", "web", scale(5))
        await fleet.eventually(
            lambda: rollout_complete(store, "web") and len(pods_of(store, "web")) == 5
        )
        edit(store, DEPLOYMENTS, "default", "web", scale(1))
        await fleet.eventually(
            lambda: rollout_complete(store, "web") and len(pods_of(store, "web")) == 1
        )


async def test_broken_image_never_becomes_ready_and_exceeds_deadline() -> None:
    async with running_fleet(C) as fleet:
        store = fleet.stores[C]
        store.create(DEPLOYMENTS, deployment("web", "nginx:1.27", replicas=2, deadline=1))
        await fleet.eventually(lambda: rollout_complete(store, "web"))

        def break_it(d: dict) -> None:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:broken"

        edit(store, DEPLOYMENTS, "default", "web", break_it)

        def stalled() -> bool:
            cond = condition(store.get(DEPLOYMENTS, "default", "web"), "Progressing")
            return cond is not None and cond["reason"] == "ProgressDeadlineExceeded"

        await fleet.eventually(stalled)
        assert cond(store.get(DEPLOYMENTS, "default", "web"), "Progressing")["status"] == "False"
        broken = [
            p
            for p in pods_of(store, "web")
            if p["spec"]["containers"][0]["image"] == "nginx:broken"
        ]
        assert broken
        for pod in broken:
            waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
            assert waiting["reason"] == "ImagePullBackOff"
            assert cond(pod, "Ready")["status"] == "False"
        d = store.get(DEPLOYMENTS, "default", "web")
        assert d["status"]["availableReplicas"] == 2  # old pods keep serving
        assert not rollout_complete(store, "web")

        def fix(d: dict) -> None:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"

        edit(store, DEPLOYMENTS, "default", "web", fix)
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        assert (
            cond(store.get(DEPLOYMENTS, "default", "web"), "Progressing")["reason"]
            == "NewReplicaSetAvailable"
        )


async def test_daemonset_runs_one_pod_per_node_and_rolls() -> None:
    async with running_fleet(C, nodes=4) as fleet:
        store = fleet.stores[C]
        labels = {"app": "agent"}
        store.create(
            DAEMONSETS,
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "agent", "namespace": "default"},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "a", "image": "agent:1"}]},
                    },
                },
            },
        )

        def settled() -> bool:
            ds = store.get(DAEMONSETS, "default", "agent")
            s = ds.get("status", {})
            return (
                s.get("observedGeneration") == ds["metadata"]["generation"]
                and s.get("desiredNumberScheduled") == 4
                and s.get("updatedNumberScheduled") == 4
                and s.get("numberAvailable") == 4
            )

        await fleet.eventually(settled)

        def bump(ds: dict) -> None:
            ds["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"

        edit(store, DAEMONSETS, "default", "agent", bump)
        await fleet.eventually(settled)
        pods = pods_of(store, "agent")
        assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(
            n["metadata"]["name"] for n in store.list(NODES)
        )
        assert {p["spec"]["containers"][0]["image"] for p in pods} == {"agent:2"}


async def test_nodes_not_ready_fault_and_clear() -> None:
    async with running_fleet(C, nodes=4) as fleet:
        store = fleet.stores[C]
        fleet.sim.set_fault(C, "nodes-not-ready", {"count": 2})
        not_ready = [n for n in store.list(NODES) if cond(n, "Ready")["status"] != "True"]
        assert [n["metadata"]["name"] for n in not_ready] == [f"{C}-md-0-0", f"{C}-md-0-1"]
        assert cond(not_ready[0], "Ready")["status"] == "Unknown"
        assert any(
            t["key"] == "node.kubernetes.io/unreachable" for t in not_ready[0]["spec"]["taints"]
        )
        await fleet.eventually(
            lambda: store.get(DAEMONSETS, "kube-system", "kube-proxy")["status"]["numberReady"] == 2
        )
        fleet.sim.clear_fault(C, "nodes-not-ready")
        assert all(cond(n, "Ready")["status"] == "True" for n in store.list(NODES))
        assert all("taints" not in n["spec"] for n in store.list(NODES)[1:])
        await fleet.eventually(
            lambda: store.get(DAEMONSETS, "kube-system", "kube-proxy")["status"]["numberReady"] == 4
        )


async def test_deleting_a_deployment_collects_its_replicasets_and_pods() -> None:
    async with running_fleet(C) as fleet:
        store = fleet.stores[C]
        store.create(DEPLOYMENTS, deployment("web", "nginx:1.27"))
        await fleet.eventually(lambda: rollout_complete(store, "web"))
        store.delete(DEPLOYMENTS, "default", "web")
        await fleet.eventually(
            lambda: not pods_of(store, "web") and not store.list(REPLICASETS, "default")
        )


async def test_pending_work_resumes_after_a_restore() -> None:
    async with running_fleet(C) as fleet:
        store = fleet.stores[C]
        store.create(DEPLOYMENTS, deployment("web", "nginx:1.27"))
        dumped = store.dump()  # pods not even created yet
    async with running_fleet() as fleet:
        restored = ObjectStore.load(C, dumped)
        fleet.watch(restored)
        fleet.sim.attach(C, restored)
        await fleet.eventually(lambda: rollout_complete(restored, "web"))
