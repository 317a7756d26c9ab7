"""The `Lab` runtime: clusters, their stores and endpoints, the CA, users and faults.

`Lab` ties the HTTP server (lab/server.py) to the behaviour simulation
(lab/simulation.py). HTTP-level faults (dark, slow, flaky) are applied here; behavioural
ones (nodes-not-ready, upgrade-fail) are handed to the simulation. The admin API and the
`python -m lab` CLI drive a `Lab`; tests may run one in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from lab import certreport, kubeconfig, pki, state
from lab.api import discovery
from lab.api.registry import NAMESPACES
from lab.auth import ALL_VERBS, User, new_token
from lab.cluster import HTTP_FAULTS, Cluster
from lab.controllers import capi, certmanager
from lab.dr import DR_FAULTS, Dr, DrAppSpec, check_fault
from lab.server import ApiServer
from lab.simulation import BEHAVIOUR_FAULTS, Simulation
from lab.store import ObjectStore
from lab.topology import DEFAULT_VERSION, MANAGEMENT, ClusterSpec, fleet

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
FAULT_KINDS = (*HTTP_FAULTS, *sorted(BEHAVIOUR_FAULTS), *sorted(DR_FAULTS))


class Lab:
    """A fleet of simulated clusters served over HTTPS from this process.

    `clusters` is a count (named by lab.topology) or explicit specs. With `state_file`,
    `start()` restores ports, tokens, CAs and objects from it when it exists, and `stop()`
    writes it. `simulate=False` serves bare API servers (namespaces only, no controllers:
    a deleted namespace stays Terminating, as without kube-controller-manager).
    `cert_expiry` maps cluster names to the days their first serving certificate has left
    (negative: expired); others get a year. See docs/lab-certificates.md.
    `dr_apps` seeds disaster-recovery applications (lab/dr.py, docs/lab-dr.md) whose
    operator steps take `dr_step` seconds, whose DNS changes publish after `dns_sync` and
    whose primaries back from `dark` run crash recovery for `dr_crash_recovery` seconds.
    """

    def __init__(
        self,
        *,
        directory: Path,
        clusters: int | Sequence[ClusterSpec] = 6,
        nodes: int = 3,
        version: str = DEFAULT_VERSION,
        rollout_delay: float = 0.5,
        upgrade_seconds: float = 2.0,
        state_file: Path | None = None,
        seed: int = 0,
        simulate: bool = True,
        cert_expiry: Mapping[str, float] | None = None,
        dr_apps: Sequence[DrAppSpec] = (),
        dr_step: float = 0.3,
        dns_sync: float = 0.2,
        dr_crash_recovery: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.specs = (
            fleet(clusters, version=version) if isinstance(clusters, int) else list(clusters)
        )
        self.nodes = nodes
        self.version = version
        self.state_file = state_file
        self.seed = seed
        self.simulation: Simulation | None = (
            Simulation(rollout_delay=rollout_delay, upgrade_seconds=upgrade_seconds)
            if simulate
            else None
        )
        self.clusters: dict[str, Cluster] = {}  # management first, then workload clusters
        self.cert_expiry = dict(cert_expiry or {})
        unknown = set(self.cert_expiry) - {s.name for s in self.specs} - {MANAGEMENT}
        if unknown:
            raise ValueError(f"cert expiry for unknown clusters: {', '.join(sorted(unknown))}")
        self.dr: Dr | None = (
            Dr(
                self.clusters,
                step=dr_step,
                dns_sync=dns_sync,
                crash_recovery=dr_crash_recovery,
                seed=seed,
            )
            if simulate
            else None
        )
        self.dr_apps = list(dr_apps)
        self._server: ApiServer | None = None
        self._sim_task: asyncio.Task[None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def management(self) -> Cluster:
        return self.clusters[MANAGEMENT]

    def workload_clusters(self) -> list[Cluster]:
        return [c for c in self.clusters.values() if not c.management]

    async def start(self) -> None:
        saved = state.load(self.state_file) if self.state_file else None
        if saved is not None:
            self._restore(saved)
        else:
            self._create(MANAGEMENT, {}, self.version, management=True)
            if self.simulation is not None:
                self.simulation.attach_management(self.management.store, certs=self)
            for spec in self.specs:
                self._add(spec.name, dict(spec.labels), spec.version)
        self._server = ApiServer(seed=self.seed)
        await self._server.start()
        for cluster in self.clusters.values():
            if not _closed(cluster):
                await self._server.listen(cluster)
        for cluster in self.workload_clusters():
            self._publish_kubeconfig(cluster)
        if self.simulation is not None:
            self._sim_task = asyncio.create_task(self.simulation.run())
        if self.dr is not None:
            await self.dr.start(self.dr_apps if saved is None else ())
        self.write_kubeconfig()

    async def stop(self) -> None:
        """Stops serving and the simulation; writes the state file when configured."""
        if self.dr is not None:
            await self.dr.stop()
        if self.simulation is not None:
            self.simulation.stop()
        if self._sim_task is not None:
            self._sim_task.cancel()  # its timers are stopped; it may not have started yet
            with contextlib.suppress(asyncio.CancelledError):
                await self._sim_task
            self._sim_task = None
        for cluster in self.clusters.values():
            cluster.store.close_all_watches()
            cluster.released.set()
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self.state_file is not None:
            state.save(self.state_file, self.dump())

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- clusters ----------------------------------------------------------------------

    def _create(
        self, name: str, labels: dict[str, str], version: str, *, management: bool = False
    ) -> Cluster:
        store = ObjectStore(name)
        cluster = Cluster(name, labels, version, new_token(), store, management=management)
        cluster.tls = pki.ServingTLS.create(name, days=self.cert_expiry.get(name))
        self._install_on_contact(cluster)
        if self.simulation is not None:
            self.simulation.set_trust(name, cluster.tls.trust_pem.decode())
            self.simulation.seed_cluster(store, name=name, version=version, nodes=self.nodes)
            self.simulation.attach(name, store)
        else:
            _bare_seed(store)
        self.clusters[name] = cluster
        return cluster

    def _add(self, name: str, labels: dict[str, str], version: str) -> Cluster:
        cluster = self._create(name, labels, version)
        if self.simulation is not None:
            assert cluster.tls is not None
            self.management.store.create(
                capi.SECRETS,
                capi.ca_secret(name, cluster.tls.trust_pem, cluster.tls.signer.key_pem),
            )
            self.simulation.register_capi(
                name=name, version=version, nodes=self.nodes, labels=labels
            )
        return cluster

    async def add_cluster(
        self, name: str, labels: dict[str, str], version: str | None = None
    ) -> Cluster:
        """Adds and serves a workload cluster; ValueError for a bad or taken name/version."""
        if not _NAME.match(name) or len(name) > 50:
            raise ValueError(
                f"invalid cluster name {name!r}: use lowercase letters, digits "
                "and '-' (at most 50 characters)"
            )
        if name in self.clusters:
            raise ValueError(f"cluster {name!r} already exists")
        version = version or self.version
        if not _VERSION.match(version):
            raise ValueError(f"invalid version {version!r}: expected vMAJOR.MINOR.PATCH")
        cluster = self._add(name, dict(labels), version)
        if self._server is not None:
            await self._server.listen(cluster)
        self._publish_kubeconfig(cluster)
        self.write_kubeconfig()
        return cluster

    async def remove_cluster(self, name: str) -> None:
        """Stops serving and forgets a workload cluster; KeyError if unknown."""
        cluster = self._get(name)
        if cluster.management:
            raise ValueError("the management cluster cannot be removed")
        if self.dr is not None:
            await self.dr.forget(name)
        if self.simulation is not None:
            self.simulation.unregister_capi(name)
            self.simulation.detach(name)
        cluster.store.close_all_watches()
        cluster.released.set()
        if self._server is not None:
            await self._server.stop_listening(cluster, forget=True)
        del self.clusters[name]
        self.write_kubeconfig()

    def _get(self, name: str) -> Cluster:
        try:
            return self.clusters[name]
        except KeyError:
            raise KeyError(f"no cluster named {name!r}") from None

    def cluster_version(self, cluster: Cluster) -> str:
        return discovery.cluster_version(cluster.store, cluster.version)

    # ---- faults ------------------------------------------------------------------------

    async def set_fault(self, name: str, kind: str, params: dict[str, Any]) -> None:
        """Injects a fault. KeyError: unknown cluster; ValueError: bad kind or params."""
        cluster = self._get(name)
        params = {k: v for k, v in params.items() if k != "kind"}
        if kind in BEHAVIOUR_FAULTS:
            if self.simulation is None:
                raise ValueError(f"fault {kind!r} needs the simulation")
            self.simulation.set_fault(name, kind, params)
        elif kind == "dark":
            mode = params.get("mode", "refuse")
            if mode not in ("refuse", "hang"):
                raise ValueError("dark fault mode must be 'refuse' or 'hang'")
            params = {"mode": mode}
            await self._clear_dark(cluster)
            if mode == "hang":
                cluster.released = asyncio.Event()
            elif self._server is not None:
                await self._server.stop_listening(cluster)
        elif kind in DR_FAULTS:
            if self.dr is None:
                raise ValueError(f"fault {kind!r} needs the simulation")
            params = check_fault(kind, params)
            if kind == "partition" and self._server is not None:
                await self._server.stop_listening(cluster)
        elif kind == "slow":
            latency = params.get("latency_ms")
            if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
                raise ValueError("slow fault needs latency_ms, a number >= 0")
            params = {"latency_ms": latency}
        elif kind == "flaky":
            rate, codes = params.get("rate", 0.5), params.get("codes", [500, 503, 429])
            if not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise ValueError("flaky fault needs rate between 0.0 and 1.0")
            if not codes or not all(c in (429, 500, 503) for c in codes):
                raise ValueError("flaky fault codes must be among 429, 500, 503")
            params = {"rate": float(rate), "codes": list(codes)}
        else:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        cluster.faults[kind] = params
        if self.dr is not None:
            await self.dr.faults_changed(name)

    async def clear_fault(self, name: str, kind: str | None = None) -> None:
        """Clears one fault kind, or all; service restores at once."""
        cluster = self._get(name)
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        if kind in (None, "dark"):
            await self._clear_dark(cluster)
        if self.simulation is not None and (kind is None or kind in BEHAVIOUR_FAULTS):
            self.simulation.clear_fault(name, kind)
        for k in list(cluster.faults) if kind is None else [kind]:
            cluster.faults.pop(k, None)
        reopen = self._server is not None and cluster.site is None and not _closed(cluster)
        if kind in (None, "partition") and reopen and self._server is not None:
            await self._server.listen(cluster)
        if self.dr is not None:
            await self.dr.faults_changed(name)

    async def _clear_dark(self, cluster: Cluster) -> None:
        dark = cluster.faults.pop("dark", None)
        if dark is None:
            return
        cluster.released.set()
        if not _closed(cluster) and self._server is not None and cluster.site is None:
            await self._server.listen(cluster)

    # ---- certificates (the `capi.ServingCerts` the CAPI controller renews through) -----

    def expiry(self, cluster: str) -> datetime | None:
        tls = self._get(cluster).tls
        return tls.not_after if tls is not None else None

    def renew(self, cluster: str, signer: pki.KeyPair, trust_pem: bytes) -> datetime:
        """A control-plane rollout: a new serving certificate from `signer`, and
        `trust_pem` published as the cluster's trust bundle everywhere consumers read it."""
        target = self._get(cluster)
        assert target.tls is not None
        target.tls.renew(signer)
        if trust_pem != target.tls.trust_pem:  # an upgrade or renewal keeps the trust
            target.tls.trust_pem = trust_pem
            if self.simulation is not None:
                self.simulation.set_trust(cluster, trust_pem.decode())
            self._publish_kubeconfig(target)
            kubeconfig.set_trust(self.kubeconfig, target)
        return target.tls.not_after

    def set_cert_expiry(self, name: str, days: float) -> dict[str, Any]:
        """Re-issues the serving certificate now with `days` left (negative: expired), from
        the current signing CA; the control-plane Machine's annotation follows."""
        cluster = self._get(name)
        assert cluster.tls is not None
        cluster.tls.renew(not_after=pki.not_after_in(days))
        if not cluster.management:
            capi.annotate_expiry(self.management.store, name, cluster.tls.not_after)
        return self.certificates(name)

    def certificates(self, name: str) -> dict[str, Any]:
        """The served chain, trust bundle and each consumer's verdict (docs/lab-certificates.md)."""
        return certreport.report(self, self._get(name))

    def seed_certificate(self, cluster_name: str, /, **options: Any) -> dict[str, Any]:
        """A cert-manager Certificate in cluster `cluster_name` as if issued earlier
        (lab.controllers.certmanager.seed_certificate); needs the simulation."""
        cluster = self._get(cluster_name)
        if self.simulation is None:
            raise ValueError("seeding certificates needs the simulation (cert-manager)")
        if cluster.contacted is not None:
            hook, cluster.contacted = cluster.contacted, None
            hook()
        return certmanager.seed_certificate(cluster.store, **options)

    def _install_on_contact(self, cluster: Cluster) -> None:
        simulation = self.simulation
        if simulation is not None:
            cluster.contacted = lambda: simulation.install_addons(cluster.name)

    def _publish_kubeconfig(self, cluster: Cluster) -> None:
        """`<cluster>-kubeconfig` in mgmt, as KCP keeps it (needs the cluster's port)."""
        if self.simulation is None or cluster.management or cluster.tls is None:
            return
        mgmt = self.management.store
        secret = capi.kubeconfig_secret(cluster.name, kubeconfig.for_cluster(cluster))
        current = mgmt.find(capi.SECRETS, capi.NAMESPACE, secret["metadata"]["name"])
        if current is None:
            mgmt.create(capi.SECRETS, secret)
        elif current.get("data") != secret["data"]:
            mgmt.update(capi.SECRETS, dict(current, data=secret["data"]))

    # ---- users, kubeconfig, state ------------------------------------------------------

    def add_user(
        self, name: str, user: str, verbs: Sequence[str], resources: Sequence[str] = ("*",)
    ) -> str:
        """Adds a limited identity to cluster `name`; returns its bearer token."""
        cluster = self._get(name)
        bad = [v for v in verbs if v != "*" and v not in ALL_VERBS]
        if not user or not verbs or bad:
            raise ValueError(f"a user needs a name and verbs among {', '.join(ALL_VERBS)}")
        token = new_token()
        cluster.users[token] = User(user, token, frozenset(verbs), frozenset(resources or ["*"]))
        return token

    def write_kubeconfig(self) -> Path:
        workloads = self.workload_clusters()
        current = (workloads[0] if workloads else self.management).context
        return kubeconfig.write(self.kubeconfig, self.clusters.values(), current=current)

    def describe(self) -> list[dict[str, Any]]:
        """Workload clusters as the admin API and lab.json list them (no secrets)."""
        return [
            {
                "name": c.name,
                "context": c.context,
                "server": c.server,
                "labels": dict(c.labels),
                "version": self.cluster_version(c),
                "faults": copy.deepcopy(c.faults),
            }
            for c in self.workload_clusters()
        ]

    def info(self, *, admin_url: str, pid: int) -> dict[str, Any]:
        """The content of lab.json."""
        clusters = [{k: v for k, v in c.items() if k != "faults"} for c in self.describe()]
        return {
            "pid": pid,
            "admin_url": admin_url,
            "kubeconfig": str(self.kubeconfig),
            "management_context": self.management.context,
            "clusters": clusters,
        }

    def secrets(self) -> list[str]:
        """Every token and private key this lab issued (for no-secrets-in-history tests)."""
        out = []
        for c in self.clusters.values():
            out.append(c.token)
            out.extend(c.users)
            if c.tls is not None:
                out += [c.tls.signer.key_pem.decode(), c.tls.serving.key_pem.decode()]
        return out

    def dump(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "clusters": [
                {
                    "name": c.name,
                    "labels": c.labels,
                    "version": c.version,
                    "token": c.token,
                    "port": c.port,
                    "management": c.management,
                    "faults": c.faults,
                    "users": [u.dump() for u in c.users.values()],
                    "store": c.store.dump(),
                    "tls": c.tls.dump() if c.tls is not None else None,
                }
                for c in self.clusters.values()
            ],
        }

    def _restore(self, data: dict[str, Any]) -> None:
        legacy = pki.KeyPair.load(data["ca"]) if "ca" in data else None  # one lab-wide CA
        self.nodes = int(data.get("nodes", self.nodes))
        for entry in data["clusters"]:
            store = ObjectStore.load(entry["name"], entry["store"])
            users = [User.load(u) for u in entry.get("users", [])]
            cluster = Cluster(
                entry["name"],
                dict(entry["labels"]),
                entry["version"],
                entry["token"],
                store,
                port=int(entry["port"]),
                management=bool(entry["management"]),
                faults=dict(entry.get("faults") or {}),
                users={u.token: u for u in users},
            )
            if entry.get("tls"):
                cluster.tls = pki.ServingTLS.load(entry["tls"])
            elif legacy is not None:
                cluster.tls = pki.ServingTLS(legacy, legacy.cert_pem, pki.not_after_in(None))
            self._install_on_contact(cluster)
            self.clusters[cluster.name] = cluster
        if self.simulation is not None:
            for cluster in self.clusters.values():
                if cluster.tls is not None:
                    self.simulation.set_trust(cluster.name, cluster.tls.trust_pem.decode())
                self.simulation.attach(cluster.name, cluster.store)
            self.simulation.attach_management(self.management.store, certs=self)
            for cluster in self.workload_clusters():  # state files from before per-cluster CAs
                name = f"{cluster.name}-ca"
                if cluster.tls and not self.management.store.find(
                    capi.SECRETS, capi.NAMESPACE, name
                ):
                    self.management.store.create(
                        capi.SECRETS,
                        capi.ca_secret(
                            cluster.name, cluster.tls.trust_pem, cluster.tls.signer.key_pem
                        ),
                    )
            for cluster in self.workload_clusters():
                for kind in BEHAVIOUR_FAULTS & set(cluster.faults):
                    self.simulation.set_fault(cluster.name, kind, cluster.faults[kind])
        for cluster in self.clusters.values():
            if cluster.faults.get("dark", {}).get("mode") == "hang":
                cluster.released = asyncio.Event()


def _closed(cluster: Cluster) -> bool:
    """Whether the cluster's API port is closed (dark/refuse, or partitioned)."""
    return cluster.faults.get("dark", {}).get("mode") == "refuse" or "partition" in cluster.faults


_BARE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _bare_seed(store: ObjectStore) -> None:
    for name in _BARE_NAMESPACES:
        store.create(
            NAMESPACES,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )
