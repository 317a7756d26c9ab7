"""Disaster-recovery applications on the lab: CNPG replica clusters across lab clusters,
their DNS record, the database endpoints clients write to, DR faults and workload clients.

`Dr` is what the runtime (lab/runtime.py) and the admin API drive. Nothing runs until an
application is seeded (`seed_app`): then the CNPG operator is installed on its members,
external-dns on mgmt, each member gets a database endpoint (plain HTTP on 127.0.0.1,
virtual-hosted by the `<cluster>-rw.<ns>.svc.<member>.lab` service host) and a ticker
streams WAL every `TICK` seconds. docs/lab-dr.md is the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lab.cluster import Cluster
from lab.controllers.cnpg import (
    CLUSTERS,
    DEFAULT_IMAGE,
    GROUP,
    CnpgOperator,
    Instance,
    Member,
    format_lsn,
    parse_host,
    service_host,
)
from lab.controllers.common import CRDS, NAMESPACES
from lab.controllers.externaldns import DNSENDPOINTS, ExternalDns
from lab.controllers.externaldns import GROUP as DNS_GROUP
from lab.workload import Workload

log = logging.getLogger(__name__)

TICK = 0.05
SEQ_RANGE = 1_000_000_000  # workload k writes seqs k*SEQ_RANGE+1, +2, ...
DR_FAULTS = frozenset({"partition", "replication-lag", "db-not-ready"})
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class DrAppSpec:
    """An application: its first cluster holds the primary, the others replica clusters."""

    name: str
    clusters: tuple[str, ...]
    namespace: str = ""  # default: the app name
    dns_name: str = ""  # default: <name>.db.lab
    ttl: int = 5

    @property
    def ns(self) -> str:
        return self.namespace or self.name

    @property
    def dns(self) -> str:
        return self.dns_name or f"{self.name}.db.lab"

    def cluster_name(self, member: str) -> str:
        return f"{self.name}-{member}"

    def host(self, member: str) -> str:
        return service_host(self.cluster_name(member), self.ns, member)


def parse_app(text: str) -> DrAppSpec:
    """`NAME=C1,C2[,C3]` (the `--dr-app` flag)."""
    name, sep, members = text.partition("=")
    clusters = tuple(m.strip() for m in members.split(",") if m.strip())
    if not sep or not name or len(clusters) < 2:
        raise ValueError(f"bad DR app {text!r}: expected NAME=PRIMARY,REPLICA[,REPLICA...]")
    return DrAppSpec(name.strip(), clusters)


def check_fault(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The normalized params of a DR fault; ValueError when they are wrong."""
    if kind == "partition":
        isolate = params.get("isolate", False)
        if not isinstance(isolate, bool):
            raise ValueError("partition isolate must be true or false")
        return {"isolate": True} if isolate else {}
    raw = params.get("seconds")
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    seconds = float(raw) if number and raw is not None else -1.0
    if kind == "replication-lag":
        if params.get("stop") is True:
            return {"stop": True}
        if seconds < 0:
            raise ValueError("replication-lag needs seconds (a number >= 0) or stop: true")
        return {"seconds": seconds}
    if kind == "db-not-ready":
        if seconds <= 0:
            raise ValueError("db-not-ready needs seconds, a number > 0")
        return {"seconds": seconds}
    raise ValueError(f"unknown DR fault {kind!r}")


@dataclass
class _Endpoint:
    """The database endpoint of one member: its port and listening site."""

    port: int = 0
    site: web.TCPSite | None = None


@dataclass
class Dr:
    clusters: dict[str, Cluster]  # the runtime's, by name (mgmt included): kept current
    step: float = 0.3
    dns_sync: float = 0.2
    crash_recovery: float = 1.0
    seed: int = 0
    apps: dict[str, DrAppSpec] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._members: dict[str, Member] = {}
        self.operator = CnpgOperator(
            members=self._member,
            db_port=lambda m: self._endpoints[m].port,
            step=self.step,
            crash_recovery=self.crash_recovery,
            seed=self.seed,
        )
        self.dns: ExternalDns | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._dark: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self, apps: tuple[DrAppSpec, ...] | list[DrAppSpec] = ()) -> None:
        """Resumes the DR parts found in restored stores, then seeds `apps`."""
        mgmt = self.management()
        if mgmt.store.find(CRDS, "", f"dnsendpoints.{DNS_GROUP}") is not None:
            self._dns().install()
        for name, cluster in list(self.clusters.items()):
            if cluster.store.find(CRDS, "", f"clusters.{GROUP}") is not None:
                await self._install(name)
        self._recover_apps()
        for app in apps:
            await self.seed_app(app)

    async def stop(self) -> None:
        for workload in list(self.workloads.values()):
            await workload.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self.operator.stop()
        if self.dns is not None:
            self.dns.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _recover_apps(self) -> None:
        """Rebuilds the app records of a restored lab from its DNSEndpoints and Clusters
        (`app.kubernetes.io/name` label); the member DNS points at comes first."""
        for endpoint in self.management().store.list(DNSENDPOINTS):
            meta, records = endpoint["metadata"], endpoint["spec"].get("endpoints") or []
            members = [
                name
                for name, cluster in self.clusters.items()
                if any(
                    (c["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
                    == meta["name"]
                    for c in cluster.store.list(CLUSTERS, meta["namespace"])
                )
            ]
            target = parse_host(str((records[0].get("targets") or [""])[0])) if records else None
            if target is None or len(members) < 2 or meta["name"] in self.apps:
                continue
            members.sort(key=lambda m: m != target[0])
            spec = DrAppSpec(
                meta["name"],
                tuple(members),
                meta["namespace"],
                str(records[0].get("dnsName") or ""),
                int(records[0].get("recordTTL") or 5),
            )
            self.apps[spec.name] = spec

    def cluster_of(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    def management(self) -> Cluster:
        return next(c for c in self.clusters.values() if c.management)

    async def forget(self, member: str) -> None:
        """A lab cluster is being removed: its databases and endpoint go."""
        await self._stop_listening(member)
        self._endpoints.pop(member, None)
        self.operator.forget(member)
        self._members.pop(member, None)

    # ---- seeding -------------------------------------------------------------------------

    async def seed_app(self, spec: DrAppSpec) -> dict[str, Any]:
        """Creates an app's Clusters (settled: replicas already cloned) and DNSEndpoint."""
        self._check_app(spec)
        for member in spec.clusters:
            await self._install(member)
        primary = spec.clusters[0]
        for member in spec.clusters:
            cluster = self.cluster_of(member)
            assert cluster is not None
            _ensure_namespace(cluster.store, spec.ns)
            cluster.store.create(CLUSTERS, _cluster_object(spec, member, primary))
        key = (primary, spec.ns, spec.cluster_name(primary))
        self.operator.reconcile(key)  # initdb
        source = self.operator.instances[key].db
        assert source is not None
        for member in spec.clusters[1:]:
            replica_key = (member, spec.ns, spec.cluster_name(member))
            instance = self.operator.instances.setdefault(replica_key, Instance())
            instance.db = source.clone()
            self.operator.reconcile(replica_key)
        mgmt = self.management()
        _ensure_namespace(mgmt.store, spec.ns)
        self._dns().install()
        mgmt.store.create(DNSENDPOINTS, _dns_endpoint(spec, primary))
        self._dns().publish(spec.ns, spec.name)
        self.apps[spec.name] = spec
        self.operator.tick()  # the replicas connect to their source
        self._ensure_ticker()
        return self.describe_app(spec)

    def _check_app(self, spec: DrAppSpec) -> None:
        if not _NAME.match(spec.name) or len(spec.name) > 30:
            raise ValueError(
                f"invalid app name {spec.name!r}: a DNS label of at most 30 characters"
            )
        if spec.name in self.apps:
            raise ValueError(f"DR app {spec.name!r} already exists")
        if len(spec.clusters) < 2 or len(set(spec.clusters)) != len(spec.clusters):
            raise ValueError("a DR app needs at least two distinct clusters")
        if not _NAME.match(spec.ns):
            raise ValueError(f"invalid namespace {spec.ns!r}")
        if not isinstance(spec.ttl, int) or spec.ttl < 1:
            raise ValueError("ttl must be a whole number of seconds >= 1")
        for member in spec.clusters:
            cluster = self.cluster_of(member)
            if cluster is None:
                raise KeyError(f"no cluster named {member!r}")
            if cluster.management:
                raise ValueError("DR apps run on workload clusters, not mgmt")
            if "dark" in cluster.faults:
                raise ValueError(f"cluster {member!r} is dark: clear the fault first")
            if cluster.store.find(CLUSTERS, spec.ns, spec.cluster_name(member)) is not None:
                raise ValueError(f"{spec.ns}/{spec.cluster_name(member)} exists on {member}")
        if self.management().store.find(DNSENDPOINTS, spec.ns, spec.name) is not None:
            raise ValueError(f"DNSEndpoint {spec.ns}/{spec.name} exists on mgmt")

    async def _install(self, member: str) -> None:
        self.operator.install(member)
        await self._listen(member)
        self._ensure_ticker()

    def _dns(self) -> ExternalDns:
        if self.dns is None:
            self.dns = ExternalDns(self.management().store, sync_delay=self.dns_sync)
        return self.dns

    def _ensure_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            try:
                self.operator.tick()
            except Exception:  # a lab bug: log it, keep replicating
                log.exception("DR tick failed")
            await asyncio.sleep(TICK)

    def _member(self, name: str) -> Member | None:
        cluster = self.cluster_of(name)
        if cluster is None:
            return None
        member = self._members.get(name)
        if member is None or member.cluster is not cluster:
            member = self._members[name] = Member(cluster)
        return member

    # ---- faults --------------------------------------------------------------------------

    async def faults_changed(self, name: str) -> None:
        """Follows a member's faults: DB endpoint up/down, crash recovery, lag, not-ready."""
        member = self._member(name)
        if member is None:
            return
        faults = member.cluster.faults
        lag = faults.get("replication-lag") or {}
        member.replication_stopped = bool(lag.get("stop"))
        member.lag_seconds = float(lag.get("seconds") or 0.0)
        seconds = float((faults.get("db-not-ready") or {}).get("seconds") or 0.0)
        if seconds and not member.not_ready_seconds:
            self.operator.not_ready(name, seconds)
        member.not_ready_seconds = seconds
        dark = faults.get("dark")
        if dark is not None:
            self._dark.add(name)
        elif name in self._dark:
            self._dark.discard(name)
            self.operator.crashed(name)
        if name in self._endpoints:
            if dark is not None and dark.get("mode") == "refuse":
                await self._stop_listening(name)
            else:
                await self._listen(name)

    # ---- the database endpoints ----------------------------------------------------------

    async def _listen(self, member: str) -> None:
        endpoint = self._endpoints.setdefault(member, _Endpoint())
        cluster = self.cluster_of(member)
        if endpoint.site is not None or cluster is None:
            return
        if cluster.faults.get("dark", {}).get("mode") == "refuse":
            return
        if self._runner is None:
            app = web.Application(middlewares=[self._route])
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", endpoint.port, reuse_address=True)
        await site.start()
        endpoint.site = site
        endpoint.port = site.port

    async def _stop_listening(self, member: str) -> None:
        endpoint = self._endpoints.get(member)
        if endpoint is None or endpoint.site is None:
            return
        await endpoint.site.stop()
        endpoint.site = None
        server = self._runner.server if self._runner else None
        for conn in server.connections if server else []:
            transport = conn.transport
            sock = transport.get_extra_info("sockname") if transport else None
            if transport is not None and sock and sock[1] == endpoint.port:
                transport.abort()

    def address(self, host: str) -> str | None:
        """Where a service host's database endpoint listens ("127.0.0.1:port")."""
        key = parse_host(host)
        endpoint = self._endpoints.get(key[0]) if key else None
        return f"127.0.0.1:{endpoint.port}" if endpoint and endpoint.port else None

    @web.middleware
    async def _route(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        member = next((m for m, e in self._endpoints.items() if e.port == port), None)
        cluster = self.cluster_of(member) if member else None
        if member is None or cluster is None:
            return web.json_response({"error": "no database here"}, status=404)
        if cluster.faults.get("dark", {}).get("mode") == "hang":
            await cluster.released.wait()
        key = parse_host(request.headers.get("Host", ""))
        if key is None or key[0] != member or self.operator.cluster_object(key) is None:
            return web.json_response({"error": "no such database service"}, status=404)
        request["key"] = key
        return await handler(request)

    async def _handle(self, request: web.Request) -> web.Response:
        key = request["key"]
        if request.method == "POST" and request.path == "/write":
            try:
                body = await request.json()
                seq = int(body["seq"])
            except (ValueError, KeyError, TypeError):
                return web.json_response({"error": 'body must be {"seq": <int>}'}, status=400)
            record, reason = self.operator.write(key, seq)
            if record is None:
                return web.json_response({"error": reason}, status=503)
            db = self.operator.instances[key].db
            assert db is not None
            return web.json_response(
                {"cluster": key[2], "lsn": format_lsn(record.lsn), "timeline": db.timeline}
            )
        if request.method == "GET" and request.path == "/status":
            return web.json_response(self.operator.describe(key))
        if request.method == "GET" and request.path == "/seqs":
            instance = self.operator.instances.get(key)
            seqs = instance.db.seqs() if instance and instance.db else []
            return web.json_response({"seqs": seqs})
        return web.json_response({"error": "not found"}, status=404)

    # ---- DNS -----------------------------------------------------------------------------

    def resolve(self, name: str) -> dict[str, Any] | None:
        """The zone's answer for `name`, with the member and address its target serves."""
        answer = self.dns.resolve(name) if self.dns else None
        if answer is None:
            return None
        target = answer.targets[0]
        key = parse_host(target)
        return {
            "name": answer.name,
            "recordType": answer.record_type,
            "targets": list(answer.targets),
            "ttl": answer.ttl,
            "member": key[0] if key else None,
            "address": self.address(target),
        }

    def _lookup(self, name: str) -> tuple[str, str, int] | None:
        answer = self.dns.resolve(name) if self.dns else None
        if answer is None:
            return None
        address = self.address(answer.targets[0])
        return (answer.targets[0], address, answer.ttl) if address else None

    # ---- reports -------------------------------------------------------------------------

    def describe_app(self, spec: DrAppSpec) -> dict[str, Any]:
        members = []
        for member in spec.clusters:
            key = (member, spec.ns, spec.cluster_name(member))
            state = self.operator.describe(key)
            members.append(
                {
                    "member": member,
                    "cluster": key[2],
                    "host": spec.host(member),
                    "address": self.address(spec.host(member)),
                    **{k: v for k, v in state.items() if k not in ("cluster", "member")},
                }
            )
        return {"name": spec.name, "namespace": spec.ns, "dnsName": spec.dns, "members": members}

    def describe(self) -> list[dict[str, Any]]:
        return [self.describe_app(spec) for spec in self.apps.values()]

    # ---- workloads -----------------------------------------------------------------------

    def start_workload(
        self, app: str, *, interval: float = 0.02, timeout: float = 0.5, probe: float = 0.1
    ) -> str:
        spec = self.apps.get(app)
        if spec is None:
            raise KeyError(f"no DR app named {app!r}")
        if not (0.001 <= interval <= 10 and 0.01 <= timeout <= 30 and 0.01 <= probe <= 10):
            raise ValueError("interval 1 ms..10 s, timeout 10 ms..30 s, probe 10 ms..10 s")
        number = next(self._ids)
        workload = Workload(
            app=app,
            dns_name=spec.dns,
            members={m: spec.host(m) for m in spec.clusters},
            lookup=self._lookup,
            address=self.address,
            interval=interval,
            timeout=timeout,
            probe=probe,
            first_seq=number * SEQ_RANGE + 1,
        )
        workload.start()
        workload_id = f"w{number}"
        self.workloads[workload_id] = workload
        return workload_id

    def workload(self, workload_id: str) -> Workload:
        try:
            return self.workloads[workload_id]
        except KeyError:
            raise KeyError(f"no workload {workload_id!r}") from None

    async def stop_workload(self, workload_id: str) -> dict[str, Any]:
        return await self.workload(workload_id).stop()


def _ensure_namespace(store: Any, name: str) -> None:
    if store.find(NAMESPACES, "", name) is None:
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


def _cluster_object(spec: DrAppSpec, member: str, primary: str) -> dict[str, Any]:
    me = spec.cluster_name(member)
    others = [spec.cluster_name(m) for m in spec.clusters if m != member]
    source = spec.cluster_name(primary) if member != primary else others[0]
    bootstrap: dict[str, Any] = (
        {"initdb": {"database": "app", "owner": "app"}}
        if member == primary
        else {"pg_basebackup": {"source": spec.cluster_name(primary)}}
    )
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Cluster",
        "metadata": {
            "name": me,
            "namespace": spec.ns,
            "labels": {"app.kubernetes.io/name": spec.name},
        },
        "spec": {
            "instances": 3,
            "imageName": DEFAULT_IMAGE,
            "storage": {"size": "1Gi"},
            "bootstrap": bootstrap,
            "externalClusters": [
                {
                    "name": spec.cluster_name(m),
                    "connectionParameters": {
                        "host": spec.host(m),
                        "user": "streaming_replica",
                        "dbname": "postgres",
                    },
                }
                for m in spec.clusters
            ],
            "replica": {"self": me, "primary": spec.cluster_name(primary), "source": source},
        },
    }


def _dns_endpoint(spec: DrAppSpec, member: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{DNS_GROUP}/v1alpha1",
        "kind": "DNSEndpoint",
        "metadata": {"name": spec.name, "namespace": spec.ns},
        "spec": {
            "endpoints": [
                {
                    "dnsName": spec.dns,
                    "recordType": "CNAME",
                    "recordTTL": spec.ttl,
                    "targets": [spec.host(member)],
                }
            ]
        },
    }
