"""Cluster API objects, upgrades, admission and the upgrade-fail fault, in-process."""

from __future__ import annotations

import copy

import pytest

from lab.controllers.capi import (
    CLUSTERS,
    KUBEADMCONTROLPLANES,
    MACHINEDEPLOYMENTS,
    NAMESPACE,
)
from lab.controllers.common import CRDS, DAEMONSETS, NODES, condition
from lab.simulation import control_plane_version
from lab.store import ApiError, Event, ObjectStore
from tests.lab.simhelpers import Fleet, cond, running_fleet

C = "eu-prod-1"
KCP = f"{C}-control-plane"
MD = f"{C}-md-0"


def set_kcp_version(mgmt: ObjectStore, version: str) -> None:
    kcp = copy.deepcopy(mgmt.get(KUBEADMCONTROLPLANES, NAMESPACE, KCP))
    kcp["spec"]["version"] = version
    mgmt.update(KUBEADMCONTROLPLANES, kcp)


def set_md_version(mgmt: ObjectStore, version: str) -> None:
    md = copy.deepcopy(mgmt.get(MACHINEDEPLOYMENTS, NAMESPACE, MD))
    md["spec"]["template"]["spec"]["version"] = version
    mgmt.update(MACHINEDEPLOYMENTS, md)


def control_plane_done(fleet: Fleet, version: str) -> bool:
    kcp = fleet.mgmt.get(KUBEADMCONTROLPLANES, NAMESPACE, KCP)
    return (
        kcp["status"].get("version") == version
        and kcp["status"].get("observedGeneration") == kcp["metadata"]["generation"]
        and cond(kcp, "Ready")["status"] == "True"
    )


def workers_done(fleet: Fleet, version: str) -> bool:
    md = fleet.mgmt.get(MACHINEDEPLOYMENTS, NAMESPACE, MD)
    s = md["status"]
    return (
        s.get("observedGeneration") == md["metadata"]["generation"]
        and s.get("updatedReplicas") == md["spec"]["replicas"] == s.get("readyReplicas")
        and s.get("phase") == "Running"
        and md["spec"]["template"]["spec"]["version"] == version
    )


def kubelet_versions(store: ObjectStore) -> list[str]:
    return [n["status"]["nodeInfo"]["kubeletVersion"] for n in store.list(NODES)]


async def test_management_serves_capi_objects_for_each_cluster() -> None:
    async with running_fleet(C, "us-prod-1") as fleet:
        crds = {c["metadata"]["name"] for c in fleet.mgmt.list(CRDS)}
        assert {
            "clusters.cluster.x-k8s.io",
            "machinedeployments.cluster.x-k8s.io",
            "kubeadmcontrolplanes.controlplane.cluster.x-k8s.io",
        } <= crds
        for name in (C, "us-prod-1"):
            cluster = fleet.mgmt.get(CLUSTERS, NAMESPACE, name)
            assert cluster["status"]["phase"] == "Provisioned"
            assert cluster["status"]["controlPlaneReady"] is True
            kcp = fleet.mgmt.get(KUBEADMCONTROLPLANES, NAMESPACE, f"{name}-control-plane")
            assert kcp["spec"]["version"] == kcp["status"]["version"] == "v1.30.6"
            assert kcp["status"]["ready"] and kcp["status"]["initialized"]
            assert cond(kcp, "Ready")["status"] == "True"
            md = fleet.mgmt.get(MACHINEDEPLOYMENTS, NAMESPACE, f"{name}-md-0")
            assert md["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] == name
            assert md["spec"]["clusterName"] == name
        await fleet.eventually(lambda: workers_done(fleet, "v1.30.6"))


async def test_upgrade_control_plane_then_workers() -> None:
    async with running_fleet(C, nodes=4) as fleet:
        store = fleet.stores[C]
        ready_reasons: list[str] = []

        def record_ready(event: Event) -> None:
            if event.key == KUBEADMCONTROLPLANES:
                ready = condition(event.object, "Ready") or {}
                ready_reasons.append(ready.get("reason", ""))

        fleet.mgmt.add_listener(record_ready)
        set_kcp_version(fleet.mgmt, "v1.31.2")
        await fleet.eventually(lambda: control_plane_done(fleet, "v1.31.2"))
        assert "RollingUpdateInProgress" in ready_reasons  # progress was visible
        assert control_plane_version(store) == "v1.31.2"
        assert kubelet_versions(store) == ["v1.31.2"] + ["v1.30.6"] * 3
        proxy = store.get(DAEMONSETS, "kube-system", "kube-proxy")
        assert proxy["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.31.2")

        updated_counts: list[int] = []

        def record(event: Event) -> None:
            if event.key == MACHINEDEPLOYMENTS:
                updated_counts.append(event.object["status"].get("updatedReplicas", 0))

        fleet.mgmt.add_listener(record)
        set_md_version(fleet.mgmt, "v1.31.2")
        await fleet.eventually(lambda: workers_done(fleet, "v1.31.2"))
        assert kubelet_versions(store) == ["v1.31.2"] * 4
        assert sorted(set(updated_counts)) == [0, 1, 2, 3]  # one node at a time
        assert all(not n["spec"].get("unschedulable") for n in store.list(NODES))


@pytest.mark.parametrize(
    ("version", "detail"),
    [
        ("v1.32.0", "skipping minor versions is not supported"),
        ("v1.29.9", "downgrades are not supported"),
        ("1.31", "must be a valid semantic version"),
    ],
)
async def test_admission_refuses_bad_control_plane_versions(version: str, detail: str) -> None:
    async with running_fleet(C) as fleet:
        with pytest.raises(ApiError) as refused:
            set_kcp_version(fleet.mgmt, version)
        err = refused.value
        assert err.code == 422 and err.reason == "Invalid"
        assert err.message.startswith(
            'admission webhook "validation.kubeadmcontrolplane.controlplane.cluster.x-k8s.io" '
            "denied the request: "
        )
        assert "spec.version" in err.message and detail in err.message
        assert fleet.mgmt.get(KUBEADMCONTROLPLANES, NAMESPACE, KCP)["spec"]["version"] == "v1.30.6"


async def test_admission_refuses_workers_newer_than_control_plane() -> None:
    async with running_fleet(C) as fleet:
        with pytest.raises(ApiError) as refused:
            set_md_version(fleet.mgmt, "v1.31.0")
        assert refused.value.code == 422
        assert "spec.template.spec.version: Forbidden" in refused.value.message
        assert "newer than the control plane" in refused.value.message


async def test_upgrade_fail_stops_midway_and_resumes_when_cleared() -> None:
    async with running_fleet(C) as fleet:
        fleet.sim.set_fault(C, "upgrade-fail", {})
        set_kcp_version(fleet.mgmt, "v1.31.0")

        def failed() -> bool:
            kcp = fleet.mgmt.get(KUBEADMCONTROLPLANES, NAMESPACE, KCP)
            ready = condition(kcp, "Ready")
            return ready is not None and ready.get("severity") == "Error"

        await fleet.eventually(failed)
        kcp = fleet.mgmt.get(KUBEADMCONTROLPLANES, NAMESPACE, KCP)
        assert cond(kcp, "Ready")["status"] == "False"
        assert kcp["status"]["version"] == "v1.30.6"
        assert kcp["status"]["observedGeneration"] < kcp["metadata"]["generation"]
        assert control_plane_version(fleet.stores[C]) == "v1.30.6"

        fleet.sim.clear_fault(C, "upgrade-fail")
        await fleet.eventually(lambda: control_plane_done(fleet, "v1.31.0"))
        assert control_plane_version(fleet.stores[C]) == "v1.31.0"


async def test_upgrade_fail_stops_a_worker_rollout() -> None:
    async with running_fleet(C, nodes=3) as fleet:
        set_kcp_version(fleet.mgmt, "v1.31.0")
        await fleet.eventually(lambda: control_plane_done(fleet, "v1.31.0"))
        fleet.sim.set_fault(C, "upgrade-fail", {})
        set_md_version(fleet.mgmt, "v1.31.0")

        def failed() -> bool:
            md = fleet.mgmt.get(MACHINEDEPLOYMENTS, NAMESPACE, MD)
            ready = condition(md, "Ready")
            return ready is not None and ready["status"] == "False"

        await fleet.eventually(failed)
        md = fleet.mgmt.get(MACHINEDEPLOYMENTS, NAMESPACE, MD)
        assert md["status"]["updatedReplicas"] < md["spec"]["replicas"]
        assert cond(md, "Ready")["severity"] == "Error"
        fleet.sim.clear_fault(C)  # all faults
        await fleet.eventually(lambda: workers_done(fleet, "v1.31.0"))
        assert kubelet_versions(fleet.stores[C]) == ["v1.31.0"] * 3


async def test_nodes_not_ready_shows_in_machine_deployment() -> None:
    async with running_fleet(C, nodes=4) as fleet:
        fleet.sim.set_fault(C, "nodes-not-ready", {"count": 1})

        def degraded() -> bool:
            md = fleet.mgmt.get(MACHINEDEPLOYMENTS, NAMESPACE, MD)
            return md["status"].get("readyReplicas") == 2

        await fleet.eventually(degraded)
        fleet.sim.clear_fault(C, None)
        await fleet.eventually(lambda: workers_done(fleet, "v1.30.6"))


async def test_register_is_idempotent_and_unregister_removes() -> None:
    async with running_fleet(C) as fleet:
        fleet.sim.register_capi(name=C, version="v1.30.6", nodes=3)
        fleet.sim.unregister_capi(C)
        assert fleet.mgmt.find(CLUSTERS, NAMESPACE, C) is None
        assert fleet.mgmt.find(KUBEADMCONTROLPLANES, NAMESPACE, KCP) is None
        assert fleet.mgmt.find(MACHINEDEPLOYMENTS, NAMESPACE, MD) is None
