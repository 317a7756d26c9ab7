"""The behaviour of the simulated fleet, as one facade the lab runtime drives.

The runtime owns the stores (one per cluster) and the HTTP side; the Simulation seeds new
clusters, runs the controllers that make objects act like a real cluster (workloads and
image pulls, nodes, namespaces, endpoints, events, Cluster API upgrades) and applies the
behavioural faults (nodes-not-ready, upgrade-fail, image-missing). Controllers touch
clusters only through ObjectStore writes, so every change they make shows up in watches
with a fresh resourceVersion.

Timers are asyncio `call_later` handles armed by store listeners; nothing polls.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from lab import seed
from lab.controllers.capi import CapiController, ServingCerts
from lab.controllers.certmanager import CertManagerController
from lab.controllers.common import CONFIGMAPS, NODES, Timers
from lab.controllers.endpoints import EndpointController
from lab.controllers.events import Recorder
from lab.controllers.namespaces import NamespaceController
from lab.controllers.nodes import make_not_ready, make_ready, workers
from lab.controllers.workloads import WorkloadController
from lab.store import Event, ObjectStore
from lab.topology import DEFAULT_VERSION

BEHAVIOUR_FAULTS = frozenset({"nodes-not-ready", "upgrade-fail", "image-missing"})

_KUBERNETES_VERSION = re.compile(r"^kubernetesVersion:\s*(\S+)\s*$", re.MULTILINE)


def control_plane_version(store: ObjectStore) -> str:
    """The version the cluster's API server reports (`/version` gitVersion): kubeadm's
    ClusterConfiguration in kube-system/kubeadm-config, which control-plane upgrades
    rewrite."""
    config = store.find(CONFIGMAPS, "kube-system", seed.KUBEADM_CONFIG)
    text = (config or {}).get("data", {}).get("ClusterConfiguration", "")
    match = _KUBERNETES_VERSION.search(text)
    return match[1] if match else DEFAULT_VERSION


@dataclass
class _Attached:
    store: ObjectStore
    timers: Timers
    workloads: WorkloadController
    namespaces: NamespaceController
    endpoints: EndpointController
    active: bool = True
    certmanager: CertManagerController | None = None


class Simulation:
    def __init__(self, *, rollout_delay: float = 0.5, upgrade_seconds: float = 2.0) -> None:
        self.rollout_delay = rollout_delay
        self.upgrade_seconds = upgrade_seconds
        self._clusters: dict[str, _Attached] = {}
        self._capi: CapiController | None = None
        self._trust: dict[str, str] = {}  # each cluster's CA bundle (kube-root-ca.crt)
        self._stopped = asyncio.Event()  # binds to a loop only when awaited

    def seed_cluster(self, store: ObjectStore, *, name: str, version: str, nodes: int) -> None:
        """Creates the objects of a freshly provisioned cluster, already settled."""
        seed.seed(store, name=name, version=version, nodes=nodes)

    def attach(self, name: str, store: ObjectStore) -> None:
        """Starts the controllers of a cluster's store (one timer set and recorder each)."""
        timers, recorder = Timers(), Recorder(store)
        ca_pem = self._trust.get(name, "")
        attached = _Attached(
            store,
            timers,
            WorkloadController(
                store, timers=timers, rollout_delay=self.rollout_delay, recorder=recorder
            ),
            NamespaceController(store, ca_pem=ca_pem, timers=timers, delay=self.rollout_delay),
            EndpointController(store, timers=timers),
        )
        self._clusters[name] = attached

        def on_node(event: Event) -> None:
            if attached.active and event.key == NODES and self._capi is not None:
                self._capi.queue(name)  # MachineDeployment status follows its workers

        store.add_listener(on_node)
        attached.namespaces.start()
        attached.workloads.start()
        attached.endpoints.start()
        attached.certmanager = CertManagerController(store, timers=timers, apiserver_ca=ca_pem)
        attached.certmanager.start()
        if self._capi is not None:
            self._capi.queue(name)

    def detach(self, name: str) -> None:
        attached = self._clusters.pop(name, None)
        self._trust.pop(name, None)
        if attached is not None:
            attached.active = False
            attached.workloads.stop()
            attached.namespaces.stop()
            attached.endpoints.stop()
            if attached.certmanager is not None:
                attached.certmanager.stop()

    def install_addons(self, name: str) -> None:
        """Installs cert-manager's CRDs in cluster `name` (idempotent)."""
        attached = self._clusters.get(name)
        if attached is not None and attached.certmanager is not None:
            attached.certmanager.install()

    def set_trust(self, name: str, ca_pem: str) -> None:
        """Cluster `name`'s own trust bundle (kube-root-ca.crt, inject-apiserver-ca
        webhooks); applies at once when attached, else at `attach`."""
        self._trust[name] = ca_pem
        attached = self._clusters.get(name)
        if attached is not None:
            attached.namespaces.set_ca(ca_pem)
            if attached.certmanager is not None:
                attached.certmanager.set_apiserver_ca(ca_pem)

    def attach_management(self, store: ObjectStore, certs: ServingCerts | None = None) -> None:
        """Installs the Cluster API CRDs, admission validators and controllers on mgmt;
        `certs` renews serving certificates when control planes roll."""
        self._capi = CapiController(
            store, workload=self._store_of, upgrade_seconds=self.upgrade_seconds, certs=certs
        )
        self._capi.start()

    def register_capi(
        self, *, name: str, version: str, nodes: int, labels: dict[str, str] | None = None
    ) -> None:
        """Creates the CAPI objects of a workload cluster in mgmt (idempotent)."""
        self._management().register(name=name, version=version, nodes=nodes, labels=labels)

    def unregister_capi(self, name: str) -> None:
        self._management().unregister(name)

    def set_fault(self, name: str, kind: str, params: dict[str, Any]) -> None:
        """Applies a behavioural fault (`BEHAVIOUR_FAULTS`).

        KeyError for an unknown cluster, ValueError for an unknown kind or bad params.
        nodes-not-ready flips the first `count` workers (default 1) to NotReady;
        upgrade-fail stops the cluster's next or ongoing CAPI upgrade at its next step;
        image-missing makes pulls of `images` (references) fail from the next attempt on.
        """
        attached = self._clusters.get(name)
        if attached is None:
            raise KeyError(f"no cluster named {name!r}")
        if kind == "nodes-not-ready":
            count, pool = params.get("count", 1), len(workers(attached.store))
            if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= pool:
                raise ValueError(f"count must be an integer between 1 and {pool} (the workers)")
            make_ready(attached.store)
            make_not_ready(attached.store, count)
        elif kind == "upgrade-fail":
            self._management().set_upgrade_fail(name, True)
        elif kind == "image-missing":
            refs = params.get("images")
            if (
                not refs
                or not isinstance(refs, list)
                or not all(isinstance(r, str) and r for r in refs)
            ):
                raise ValueError("image-missing needs images, a list of image references")
            attached.workloads.missing_images = frozenset(refs)
        else:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {sorted(BEHAVIOUR_FAULTS)}"
            )

    def clear_fault(self, name: str, kind: str | None = None) -> None:
        """Clears one behavioural fault, or all of them when `kind` is None; other kinds
        are ignored (the runtime clears HTTP faults itself)."""
        attached = self._clusters.get(name)
        if attached is None:
            raise KeyError(f"no cluster named {name!r}")
        if kind in (None, "nodes-not-ready"):
            make_ready(attached.store)
        if kind in (None, "upgrade-fail") and self._capi is not None:
            self._capi.set_upgrade_fail(name, False)
        if kind in (None, "image-missing"):
            attached.workloads.missing_images = frozenset()

    async def run(self) -> None:
        """Runs until `stop()`; timers armed before it starts fire once it runs."""
        loop = asyncio.get_running_loop()
        for attached in self._clusters.values():
            attached.timers.bind(loop)
        if self._capi is not None:
            self._capi.timers.bind(loop)
        await self._stopped.wait()

    def stop(self) -> None:
        for name in list(self._clusters):
            self.detach(name)
        if self._capi is not None:
            self._capi.stop()
        self._stopped.set()

    def _store_of(self, name: str) -> ObjectStore | None:
        attached = self._clusters.get(name)
        return attached.store if attached else None

    def _management(self) -> CapiController:
        if self._capi is None:
            raise RuntimeError("attach_management() must run before CAPI objects are used")
        return self._capi
