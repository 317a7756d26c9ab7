"""CloudNativePG on the lab: the `Cluster` CRD, a simulated PostgreSQL per Cluster, replica
clusters across lab clusters, demotion/promotion tokens and fencing.

One `CnpgOperator` plays CNPG's operator and instance manager for every lab cluster it is
installed on (replication crosses clusters, so one object sees them all). Each Cluster
object owns a `Database`: a WAL of records (the writes a client made, checkpoints) on a
history of timelines. A primary appends; a replica copies its source's records (through
the `externalClusters` host of `spec.replica.source`) as long as its history is a prefix
of the source's, as PostgreSQL's streaming replication requires. Roles follow
`Cluster.IsReplica()`; role changes take `step` seconds (CNPG's shutdown / promote).

The lab's DR facade (lab/dr.py) calls `tick()` periodically: replication is continuous,
so this controller polls, unlike the others. Nothing runs until a Cluster CRD is
installed on a lab cluster (`install`). Database contents live in memory only.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lab.cluster import Cluster
from lab.controllers.common import CRDS, Timers, log, owner_ref, set_condition, write_status
from lab.controllers.endpoints import SERVICES
from lab.store import Event, Obj, ObjectStore, ResourceKey

GROUP = "postgresql.cnpg.io"
CLUSTERS = ResourceKey(GROUP, "clusters")
FENCED = "cnpg.io/fencedInstances"
OPERATOR_VERSION = "1.25.0"
DEFAULT_IMAGE = "ghcr.io/cloudnative-pg/postgresql:16.4"
HOST_SUFFIX = ".lab"

PHASE_HEALTHY = "Cluster in healthy state"
PHASE_SWITCHOVER = "Switchover in progress"
PHASE_PROMOTION = "Promoting to primary cluster"
PHASE_WAITING = "Waiting for the instances to become active"
PHASE_UNRECOVERABLE = "Cluster is unrecoverable and needs manual intervention"
PHASE_FIRST_PRIMARY = "Setting up primary"
PHASE_CREATING_REPLICA = "Creating a new replica"

RECEIVER = "WALReceiverStreaming"  # the lab's stand-in for pg_stat_wal_receiver

INITIAL_LSN = 0x3000028
_WRITE_SIZE = 0x68
_CHECKPOINT_SIZE = 0x78
_SEGMENT = 16 * 1024 * 1024

Key = tuple[str, str, str]  # (lab cluster, namespace, Cluster name)


# ---- LSNs and hosts ----------------------------------------------------------------------


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"invalid LSN {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def wal_file(timeline: int, lsn: int) -> str:
    return f"{timeline:08X}{lsn >> 32:08X}{(lsn & 0xFFFFFFFF) // _SEGMENT:08X}"


def service_host(name: str, namespace: str, member: str) -> str:
    """The host of a Cluster's `-rw` service as seen from other lab clusters."""
    return f"{name}-rw.{namespace}.svc.{member}{HOST_SUFFIX}"


def parse_host(host: str) -> Key | None:
    """(member, namespace, Cluster name) of a `service_host`; None for anything else."""
    host = host.split(":", 1)[0].lower()
    parts = host.removesuffix(HOST_SUFFIX).split(".")
    if not host.endswith(HOST_SUFFIX) or len(parts) != 4 or parts[2] != "svc":
        return None
    service, namespace, _, member = parts
    if not service.endswith("-rw") or len(service) <= 3:
        return None
    return member, namespace, service.removesuffix("-rw")


# ---- the simulated database ----------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    id: int
    start: int  # the LSN where it forks from its parent (0 for the first)
    uid: str  # two promotions to the same number are still different histories


@dataclass(frozen=True)
class Record:
    lsn: int  # the end of the record: the position once it is written or replayed
    seq: int | None  # a client write's sequence number; None for checkpoints
    at: float  # monotonic time the primary wrote it (replicas lag behind this)


@dataclass
class Database:
    system_id: str
    timelines: list[Timeline]
    wal: list[Record] = field(default_factory=list)
    primary: bool = True

    @classmethod
    def initdb(cls, rng: random.Random) -> Database:
        system_id = str(rng.randrange(7_300_000_000_000_000_000, 7_400_000_000_000_000_000))
        return cls(system_id, [Timeline(1, 0, _uid(rng))])

    @property
    def timeline(self) -> int:
        return self.timelines[-1].id

    @property
    def lsn(self) -> int:
        return self.wal[-1].lsn if self.wal else INITIAL_LSN

    def write(self, seq: int | None, now: float, size: int = _WRITE_SIZE) -> Record:
        record = Record(self.lsn + size, seq, now)
        self.wal.append(record)
        return record

    def checkpoint(self, now: float) -> Record:
        return self.write(None, now, _CHECKPOINT_SIZE)

    def promote(self, rng: random.Random) -> None:
        top = max(t.id for t in self.timelines)
        self.timelines.append(Timeline(top + 1, self.lsn, _uid(rng)))
        self.primary = True

    def clone(self) -> Database:
        """A base backup: same system identifier, history and WAL, in recovery."""
        return Database(self.system_id, list(self.timelines), list(self.wal), primary=False)

    def seqs(self) -> list[int]:
        return [r.seq for r in self.wal if r.seq is not None]

    def can_follow(self, source: Database) -> bool:
        """Whether this replica's history is the source's up to its position (else it
        diverged: its WAL went past the point where the source's timeline forked)."""
        if source.system_id != self.system_id:
            return False
        n = len(self.timelines)
        if n > len(source.timelines):  # the source is behind in history: nothing to get yet
            return source.timelines == self.timelines[: len(source.timelines)]
        if source.timelines[:n] != self.timelines:
            return False
        return n == len(source.timelines) or source.timelines[n].start >= self.lsn

    def replay_from(self, source: Database, until: float) -> None:
        """Copies the source's records written before `until` (monotonic) and, like a
        standby reaching the end of its timeline, switches to the source's newer timelines
        that fork at or before its position."""
        start = bisect.bisect_right(source.wal, self.lsn, key=lambda r: r.lsn)
        for record in source.wal[start:]:
            if record.at > until:
                break
            self.wal.append(record)
        if len(source.timelines) > len(self.timelines):
            self.timelines = [t for t in source.timelines if t.start <= self.lsn]

    def pending_age(self, source: Database, now: float) -> float:
        """Seconds since the oldest source record this replica has not replayed."""
        start = bisect.bisect_right(source.wal, self.lsn, key=lambda r: r.lsn)
        return max(0.0, now - source.wal[start].at) if start < len(source.wal) else 0.0


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


# ---- tokens (pg_controldata content, as CNPG encodes it) -----------------------------------


def demotion_token(db: Database) -> str:
    content = {
        "latestCheckpointTimelineID": str(db.timeline),
        "redoWalFile": wal_file(db.timeline, db.lsn),
        "databaseSystemIdentifier": db.system_id,
        "latestCheckpointREDOLocation": format_lsn(db.lsn),
        "timeOfLatestCheckpoint": datetime.now(UTC).strftime("%a %b %d %H:%M:%S %Y"),
        "operatorVersion": OPERATOR_VERSION,
    }
    return base64.b64encode(json.dumps(content).encode()).decode()


@dataclass(frozen=True)
class TokenError:
    message: str
    retryable: bool


def check_token(token: str, db: Database) -> TokenError | None:
    """CNPG's ValidateAgainstInstanceStatus: system identifier, timeline, replayed LSN."""
    try:
        content = json.loads(base64.b64decode(token, validate=True))
        tli = int(content["latestCheckpointTimelineID"])
        system_id = str(content["databaseSystemIdentifier"])
        lsn_text = str(content["latestCheckpointREDOLocation"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return TokenError("invalid promotion token: not the base64 JSON of a demotion", False)
    if system_id != db.system_id:
        return TokenError(
            f"mismatching system identifiers, current:{db.system_id} wanted:{system_id}", False
        )
    if tli > db.timeline:
        return TokenError(
            f"requested timeline not reached, current:{db.timeline} wanted:{tli}", True
        )
    if tli < db.timeline:
        return TokenError(
            f"requested timeline is older than current one, current:{db.timeline} wanted:{tli}",
            False,
        )
    try:
        lsn = parse_lsn(lsn_text)
    except ValueError:
        return TokenError(f"promotion token LSN is invalid: {lsn_text}", False)
    replay = format_lsn(db.lsn)
    if lsn < db.lsn:
        return TokenError(
            f"promotion token LSN ({lsn_text}) is older than the last replay LSN ({replay})",
            False,
        )
    if lsn > db.lsn:
        return TokenError(
            f"waiting for promotion token LSN ({lsn_text}) to be replayed "
            f"(the last replayed LSN is {replay})",
            True,
        )
    return None


# ---- the Cluster object --------------------------------------------------------------------


def is_replica(cluster: Obj) -> bool:
    """CNPG's Cluster.IsReplica()."""
    replica = (cluster.get("spec") or {}).get("replica")
    if not replica:
        return False
    if replica.get("enabled") is not None:
        return bool(replica["enabled"])
    me = replica.get("self") or cluster["metadata"]["name"]
    return bool(me != replica.get("primary"))


def fenced(cluster: Obj) -> bool:
    """Whether the primary instance (`<name>-1`) is fenced by `cnpg.io/fencedInstances`."""
    raw = (cluster["metadata"].get("annotations") or {}).get(FENCED)
    try:
        names = json.loads(raw) if raw else []
    except ValueError:
        return False
    return isinstance(names, list) and ("*" in names or primary_pod(cluster) in names)


def primary_pod(cluster: Obj) -> str:
    return f"{cluster['metadata']['name']}-1"


def source_host(cluster: Obj, source: str | None) -> str | None:
    for external in (cluster.get("spec") or {}).get("externalClusters") or []:
        if external.get("name") == source:
            host = (external.get("connectionParameters") or {}).get("host")
            return str(host) if host else None
    return None


def _bootstrap_source(cluster: Obj) -> str | None:
    bootstrap = (cluster.get("spec") or {}).get("bootstrap") or {}
    for method in ("pg_basebackup", "recovery"):
        if method in bootstrap:
            return str((bootstrap[method] or {}).get("source") or "") or None
    return None


def _col(name: str, path: str, type_: str = "string") -> Obj:
    return {"name": name, "type": type_, "jsonPath": path}


def crd() -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"clusters.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": "Cluster",
                "listKind": "ClusterList",
                "plural": "clusters",
                "singular": "cluster",
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.instances",
                            "statusReplicasPath": ".status.instances",
                        },
                    },
                    "additionalPrinterColumns": [
                        _col("Age", ".metadata.creationTimestamp", "date"),
                        _col("Instances", ".status.instances", "integer"),
                        _col("Ready", ".status.readyInstances", "integer"),
                        _col("Status", ".status.phase"),
                        _col("Primary", ".status.currentPrimary"),
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
        "status": {
            "acceptedNames": {"kind": "Cluster", "plural": "clusters"},
            "conditions": [
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            ],
            "storedVersions": ["v1"],
        },
    }


# ---- the operator --------------------------------------------------------------------------


@dataclass
class Instance:
    """What the operator and instance manager know of one Cluster beyond its object."""

    db: Database | None = None
    promoted_at: str = ""  # RFC3339 of the last promotion (or bootstrap)
    bootstrap_at: float | None = None  # when a pending base backup completes
    demote_at: float | None = None  # when a running demotion completes
    promote_at: float | None = None  # when a running promotion completes
    demotion_token: str = ""
    last_promotion_token: str = ""
    token_error: TokenError | None = None
    not_ready_until: float = 0.0
    receiver: str | None = None  # streaming | stopped | unreachable | diverged (replicas)
    lag: float = 0.0
    source: Key | None = None
    source_lsn: int | None = None  # the source's end of WAL when last heard from
    last_receipt: str = ""  # RFC3339 of the last message from the source


@dataclass
class Member:
    """A lab cluster as the operator sees it (the runtime's Cluster, plus DR fault state)."""

    cluster: Cluster
    lag_seconds: float = 0.0
    replication_stopped: bool = False
    not_ready_seconds: float = 0.0


class CnpgOperator:
    """CNPG's operator and instance managers for every lab cluster it is installed on."""

    def __init__(
        self,
        *,
        members: Callable[[str], Member | None],
        db_port: Callable[[str], int],
        step: float = 0.3,
        crash_recovery: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.members = members
        self.db_port = db_port
        self.step = step
        self.crash_recovery = crash_recovery
        self.rng = random.Random(seed)
        self.instances: dict[Key, Instance] = {}
        self.timers = Timers()
        self._installed: dict[str, Callable[[Event], None]] = {}

    # ---- installation --------------------------------------------------------------------

    def install(self, member: str) -> None:
        """Installs the CRD on a lab cluster and starts watching its Cluster objects."""
        m = self.members(member)
        if m is None:
            raise KeyError(f"no cluster named {member!r}")
        store = m.cluster.store
        if store.find(CRDS, "", f"clusters.{GROUP}") is None:
            store.create(CRDS, crd())
        if member in self._installed:
            return

        def on_event(event: Event) -> None:
            if event.key == CLUSTERS:
                meta = event.object["metadata"]
                key = (member, meta["namespace"], meta["name"])
                self.timers.soon(key, lambda: self.reconcile(key))

        store.add_listener(on_event)
        self._installed[member] = on_event

    def forget(self, member: str) -> None:
        listener = self._installed.pop(member, None)
        m = self.members(member)
        if listener is not None and m is not None:
            m.cluster.store.remove_listener(listener)
        for key in [k for k in self.instances if k[0] == member]:
            del self.instances[key]

    def stop(self) -> None:
        self.timers.cancel_all()

    # ---- queries -------------------------------------------------------------------------

    def dark(self, member: str) -> bool:
        m = self.members(member)
        return m is None or "dark" in m.cluster.faults

    def isolated(self, member: str) -> bool:
        """Cut off from the other lab clusters (`partition` with `isolate`)."""
        m = self.members(member)
        return m is not None and bool((m.cluster.faults.get("partition") or {}).get("isolate"))

    def cluster_object(self, key: Key) -> Obj | None:
        m = self.members(key[0])
        return m.cluster.store.find(CLUSTERS, key[1], key[2]) if m else None

    def writable(self, key: Key) -> tuple[bool, str]:
        """Whether the database accepts a write now, and PostgreSQL's refusal if not."""
        inst, obj = self.instances.get(key), self.cluster_object(key)
        if inst is None or inst.db is None or obj is None:
            return False, "the database system is starting up"
        if self.dark(key[0]):
            return False, "could not connect to server"
        if not inst.db.primary:
            return False, "cannot execute INSERT in a read-only transaction"
        if fenced(obj) or inst.demote_at is not None:
            return False, "the database system is shutting down"
        if time.monotonic() < inst.not_ready_until:
            return False, "the database system is starting up"
        return True, ""

    def describe(self, key: Key) -> dict[str, Any]:
        """What a client's SQL would show: pg_current_wal_lsn, replay LSN, receiver."""
        inst, obj = self.instances.get(key), self.cluster_object(key)
        db = inst.db if inst else None
        ok, _ = self.writable(key)
        source = inst.source if inst else None
        return {
            "cluster": key[2],
            "member": key[0],
            "role": None if db is None else "primary" if db.primary else "replica",
            "writable": ok,
            "fenced": bool(obj and fenced(obj)),
            "ready": bool(db and inst and time.monotonic() >= inst.not_ready_until),
            "timeline": db.timeline if db else None,
            "systemID": db.system_id if db else None,
            "lsn": format_lsn(db.lsn) if db and db.primary else None,
            "replayLSN": format_lsn(db.lsn) if db and not db.primary else None,
            "receiver": inst.receiver if inst and db and not db.primary else None,
            "source": source[2] if source and db and not db.primary else None,
            "lagSeconds": round(inst.lag, 3) if inst and db and not db.primary else None,
            "sourceLSN": (
                format_lsn(inst.source_lsn)
                if inst and db and not db.primary and inst.source_lsn is not None
                else None
            ),
            "lastReceiptTime": inst.last_receipt or None
            if inst and db and not db.primary
            else None,
            "needsRebuild": bool(inst and inst.receiver == "diverged"),
        }

    # ---- writes from clients -------------------------------------------------------------

    def write(self, key: Key, seq: int) -> tuple[Record | None, str]:
        ok, reason = self.writable(key)
        inst = self.instances.get(key)
        if not ok or inst is None or inst.db is None:
            return None, reason
        return inst.db.write(seq, time.monotonic()), ""

    # ---- the periodic work ---------------------------------------------------------------

    def tick(self) -> None:
        """Streams WAL to every replica, then reconciles every Cluster."""
        now = time.monotonic()
        for key, inst in list(self.instances.items()):
            if inst.db is not None and not inst.db.primary:
                self._replicate(key, inst, now)
        for member in list(self._installed):
            m = self.members(member)
            for obj in m.cluster.store.list(CLUSTERS) if m else []:
                key = (member, obj["metadata"]["namespace"], obj["metadata"]["name"])
                try:
                    self.reconcile(key)
                except Exception:  # a lab bug or a refused write: keep the others going
                    log.exception("reconciling Cluster %s failed", key)

    def crashed(self, member: str) -> None:
        """A dark member came back: its primaries run crash recovery (not ready for
        `crash_recovery` seconds), which ends with a checkpoint."""
        now = time.monotonic()
        for key, inst in self.instances.items():
            if key[0] == member and inst.db is not None and inst.db.primary:
                inst.db.checkpoint(now)
                inst.not_ready_until = max(inst.not_ready_until, now + self.crash_recovery)

    def not_ready(self, member: str, seconds: float) -> None:
        """The db-not-ready fault hits the primaries of `member` at once."""
        for key, inst in self.instances.items():
            if key[0] == member and inst.db is not None and inst.db.primary:
                inst.not_ready_until = time.monotonic() + seconds

    def _resolve_source(self, obj: Obj, name: str | None) -> tuple[Key | None, Instance | None]:
        host = source_host(obj, name)
        key = parse_host(host) if host else None
        return key, self.instances.get(key) if key else None

    def _reachable(self, key: Key, source_key: Key | None) -> bool:
        """Whether a database in `key` can connect to the one in `source_key`."""
        if source_key is None or self.dark(source_key[0]):
            return False
        across = source_key[0] != key[0]
        return not (across and (self.isolated(key[0]) or self.isolated(source_key[0])))

    def _replicate(self, key: Key, inst: Instance, now: float) -> None:
        obj, m = self.cluster_object(key), self.members(key[0])
        assert inst.db is not None
        if obj is None or m is None or "dark" in m.cluster.faults:
            return
        source_key, source = self._resolve_source(
            obj, (obj["spec"].get("replica") or {}).get("source")
        )
        inst.source = source_key
        if source is None or source.db is None or not self._reachable(key, source_key):
            inst.receiver = "unreachable"
            return
        inst.source_lsn, inst.last_receipt = source.db.lsn, _now_micro()
        if not inst.db.can_follow(source.db):
            inst.receiver = "diverged"
            return
        if m.replication_stopped or fenced(obj):
            inst.receiver, inst.lag = "stopped", inst.db.pending_age(source.db, now)
            return
        inst.db.replay_from(source.db, now - m.lag_seconds)
        inst.receiver, inst.lag = "streaming", inst.db.pending_age(source.db, now)

    # ---- reconcile -----------------------------------------------------------------------

    def reconcile(self, key: Key) -> None:
        member, namespace, name = key
        m = self.members(member)
        if m is None or member not in self._installed:
            return
        store = m.cluster.store
        obj = store.find(CLUSTERS, namespace, name)
        if obj is None:
            self.instances.pop(key, None)  # deleting a Cluster drops its data
            return
        if "dark" in m.cluster.faults:
            return  # the operator and the instances are down with the cluster
        inst = self.instances.setdefault(key, Instance())
        now = time.monotonic()
        if inst.db is None:
            self._bootstrap(key, obj, inst, now)
        elif inst.db.primary and is_replica(obj):
            self._demote(obj, inst, now)
        elif not inst.db.primary and not is_replica(obj):
            self._promote(obj, inst, m, now)
        else:
            inst.demote_at = inst.promote_at = None
            inst.token_error = None
        self._ensure_service(store, obj, member)
        write_status(store, CLUSTERS, obj, self._status(obj, inst, now))

    def _bootstrap(self, key: Key, obj: Obj, inst: Instance, now: float) -> None:
        source_name = _bootstrap_source(obj)
        if source_name is None and not is_replica(obj):
            inst.db = Database.initdb(self.rng)
            inst.promoted_at = _now_micro()
            return
        if source_name is None:
            source_name = (obj["spec"].get("replica") or {}).get("source")
        source_key, source = self._resolve_source(obj, source_name)
        if source is None or source.db is None or not self._reachable(key, source_key):
            inst.bootstrap_at = None
            return
        if inst.bootstrap_at is None:
            inst.bootstrap_at = now + self.step
            self.timers.later(key, self.step, lambda: self.reconcile(key))
            return
        if now < inst.bootstrap_at:
            return
        inst.db = source.db.clone()
        inst.bootstrap_at = None
        inst.source = source_key
        if not is_replica(obj):  # pg_basebackup into an independent cluster
            inst.db.promote(self.rng)
            inst.promoted_at = _now_micro()

    def _demote(self, obj: Obj, inst: Instance, now: float) -> None:
        assert inst.db is not None
        if inst.demote_at is None:
            inst.demote_at = now + self.step
            return
        if now < inst.demote_at:
            return
        inst.db.checkpoint(now)  # the shutdown checkpoint: the last WAL of this timeline
        inst.db.primary = False
        inst.demote_at = None
        inst.demotion_token = demotion_token(inst.db)
        inst.receiver = None

    def _promote(self, obj: Obj, inst: Instance, m: Member, now: float) -> None:
        assert inst.db is not None
        token = (obj["spec"].get("replica") or {}).get("promotionToken") or ""
        if token and token != inst.last_promotion_token:
            inst.token_error = check_token(token, inst.db)
            if inst.token_error is not None:
                inst.promote_at = None
                return
        inst.token_error = None
        if inst.promote_at is None:
            inst.promote_at = now + self.step
            return
        if now < inst.promote_at:
            return
        inst.db.promote(self.rng)
        inst.promote_at = None
        inst.promoted_at = _now_micro()
        inst.demotion_token = ""
        inst.receiver = None
        inst.lag = 0.0
        if token:
            inst.last_promotion_token = token
        if m.not_ready_seconds > 0:
            inst.not_ready_until = now + m.not_ready_seconds

    def _ensure_service(self, store: ObjectStore, obj: Obj, member: str) -> None:
        """The `<name>-rw` LoadBalancer Service, published at this member's DB port."""
        meta = obj["metadata"]
        name = f"{meta['name']}-rw"
        port = self.db_port(member)
        ingress = [{"ip": "127.0.0.1", "ports": [{"port": port, "protocol": "TCP"}]}]
        current = store.find(SERVICES, meta["namespace"], name)
        if current is None:
            store.create(
                SERVICES,
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {
                        "name": name,
                        "namespace": meta["namespace"],
                        "labels": {"cnpg.io/cluster": meta["name"]},
                        "ownerReferences": [owner_ref(obj, "Cluster", f"{GROUP}/v1")],
                    },
                    "spec": {
                        "type": "LoadBalancer",
                        "ports": [
                            {
                                "name": "postgres",
                                "port": 5432,
                                "protocol": "TCP",
                                "targetPort": 5432,
                            }
                        ],
                        "selector": {
                            "cnpg.io/cluster": meta["name"],
                            "cnpg.io/instanceRole": "primary",
                        },
                    },
                },
            )
            current = store.get(SERVICES, meta["namespace"], name)
        write_status(store, SERVICES, current, {"loadBalancer": {"ingress": ingress}})

    def _status(self, obj: Obj, inst: Instance, now: float) -> Obj:
        name = obj["metadata"]["name"]
        count = int((obj.get("spec") or {}).get("instances") or 1)
        status = dict(obj.get("status") or {})  # nested values are replaced, never mutated
        conditions: list[Obj] = [dict(c) for c in status.get("conditions") or []]
        db = inst.db
        pod = primary_pod(obj)
        is_fenced = fenced(obj)
        ready = db is not None and not is_fenced and now >= inst.not_ready_until
        phase, reason = PHASE_HEALTHY, ""
        if db is None:
            phase = (
                PHASE_CREATING_REPLICA
                if _bootstrap_source(obj) or is_replica(obj)
                else (PHASE_FIRST_PRIMARY)
            )
        elif inst.token_error is not None and not inst.token_error.retryable:
            phase, reason = PHASE_UNRECOVERABLE, inst.token_error.message
        elif inst.receiver == "diverged" and not db.primary:
            phase = PHASE_UNRECOVERABLE
            reason = (
                "the WAL of this cluster went past the point where its source's timeline "
                "forked: it must be recreated from the source (rebuild)"
            )
        elif inst.demote_at is not None:
            phase = PHASE_SWITCHOVER
        elif inst.promote_at is not None or inst.token_error is not None:
            phase = PHASE_PROMOTION
            reason = inst.token_error.message if inst.token_error else ""
        elif not ready:
            phase = PHASE_WAITING
            reason = "Some instances are not yet active. Please wait."
        status.update(
            instances=count,
            readyInstances=count if ready else 0,
            instanceNames=[f"{name}-{i}" for i in range(1, count + 1)],
            currentPrimary=pod,
            targetPrimary=pod,
            phase=phase,
            writeService=f"{name}-rw",
            readService=f"{name}-r",
            image=(obj.get("spec") or {}).get("imageName") or DEFAULT_IMAGE,
            switchReplicaClusterStatus=({"inProgress": True} if inst.demote_at is not None else {}),
        )
        _set_or_drop(status, "phaseReason", reason)
        _set_or_drop(status, "demotionToken", inst.demotion_token)
        _set_or_drop(status, "lastPromotionToken", inst.last_promotion_token)
        _set_or_drop(status, "currentPrimaryTimestamp", inst.promoted_at)
        if db is not None:
            status.update(
                timelineID=db.timeline,
                systemID=db.system_id,
                instancesReportedState={pod: {"isPrimary": db.primary, "timeLineID": db.timeline}},
            )
        if phase == PHASE_HEALTHY:
            set_condition(conditions, "Ready", "True", "ClusterIsReady", "Cluster is Ready")
        else:
            set_condition(
                conditions,
                "Ready",
                "False",
                "ClusterIsNotReady",
                "Cluster Is Not Ready",
            )
        if inst.demote_at is not None:
            set_condition(
                conditions,
                "ReplicaClusterSwitch",
                "False",
                "ReplicaEnabledSetTrue",
                "Starting the Replica cluster transition",
            )
        elif any(c["type"] == "ReplicaClusterSwitch" for c in conditions) or inst.demotion_token:
            set_condition(
                conditions,
                "ReplicaClusterSwitch",
                "True",
                "ReplicaEnabledSetTrue",
                "Completed the Replica cluster transition",
            )
        if db is not None and not db.primary:
            set_condition(conditions, RECEIVER, *self._receiver_condition(obj, inst))
        else:
            conditions[:] = [c for c in conditions if c["type"] != RECEIVER]
        status["conditions"] = conditions
        return status

    def _receiver_condition(self, obj: Obj, inst: Instance) -> tuple[str, str, str]:
        source = (obj["spec"].get("replica") or {}).get("source") or "?"
        if inst.receiver == "streaming":
            return "True", "Streaming", f"streaming from {source}, {int(inst.lag)}s behind"
        if inst.receiver == "stopped":
            return "False", "ReplicationStopped", f"not replaying WAL from {source}"
        if inst.receiver == "diverged":
            return "False", "TimelineDiverged", f"WAL diverged from the timeline of {source}"
        return "False", "SourceUnreachable", f"cannot connect to {source}"


def _set_or_drop(status: Obj, key: str, value: str) -> None:
    if value:
        status[key] = value
    else:
        status.pop(key, None)


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
