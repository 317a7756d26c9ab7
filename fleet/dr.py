"""Disaster recovery: the policy of an application, its state, and the messages of the DR
workflows (workflows/dr*.py) and activities (activities/database.py, dns.py, dr_probe.py).

An application runs its database as CloudNativePG `Cluster` objects (postgresql.cnpg.io/v1),
one per Kubernetes cluster of the policy, in a distributed topology: `spec.replica.primary`
names the Cluster that takes writes, the others replicate from `spec.replica.source`. Its
clients find the primary through a DNS record published by external-dns from a
`DNSEndpoint` (externaldns.k8s.io/v1alpha1) in a management cluster.

Flotilla holds one writable primary per application with a fencing epoch: every operation
takes a new epoch from the application's `dr-app:<name>` entity, every write step carries
it and refuses to act when the entity has moved on (a newer operation began) or when the
object it writes already carries a newer epoch (annotation `EPOCH_ANNOTATION`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fleet.events import ChangeRef
from fleet.ids import cluster_name_error
from fleet.models import ClusterRef, CredentialRef, Model

# On every object a DR write step changes: the epoch of the operation that wrote it.
EPOCH_ANNOTATION = "flotilla.io/dr-epoch"
# CloudNativePG's fencing annotation: a JSON list of instance names, "*" for all.
FENCE_ANNOTATION = "cnpg.io/fencedInstances"
# How many finished runs an application's record keeps (older ones are dropped).
KEEP_RUNS = 50


def app_id(app: str) -> str:
    return f"dr-app:{app}"


def watch_id(app: str) -> str:
    return f"dr-watch:{app}"


def fence_id(app: str, cluster: str) -> str:
    return f"dr-fence:{app}:{cluster}"


def drill_schedule_id(app: str) -> str:
    return f"dr-drill:{app}"


GUARD_ID = "dr-guard"


class Role(StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"


class OpKind(StrEnum):
    SWITCHOVER = "switchover"
    FAILOVER = "failover"
    FAILBACK = "failback"
    DRILL = "drill"

    @property
    def search_kind(self) -> str:
        """The FlotillaKind of its runs: `dr:failover`, ..."""
        return f"dr:{self.value}"


# --- policy ----------------------------------------------------------------------------


class DrMember(Model):
    """One Kubernetes cluster of the application: its inventory name, its role when the
    policy is registered, the name of its CloudNativePG Cluster and the DNS target that
    sends clients to it."""

    cluster: str = Field(description="Inventory name of the Kubernetes cluster.")
    role: Role = Role.STANDBY
    database: str = Field(description="Name of the CloudNativePG Cluster in that cluster.")
    endpoint: str = Field(description="DNS target (address or host name) of the app there.")
    # An HTTP URL that answers 2xx when the app there takes a write; empty: none.
    probe_url: str = ""

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if problem := cluster_name_error(value):
            raise ValueError(problem)
        return value


class DnsRecord(Model):
    """The `DNSEndpoint` that publishes the application's name, and where it lives."""

    credential: CredentialRef = Field(description="The cluster that holds the DNSEndpoint.")
    namespace: str = "default"
    name: str = Field(description="Name of the DNSEndpoint object.")
    dns_name: str = Field(description="The record, e.g. db.shop.example.com.")
    record_type: str = "A"
    ttl: int = Field(default=5, ge=1, le=86400)


class Objectives(Model):
    rto_seconds: float = Field(default=60, gt=0)
    rpo_seconds: float = Field(default=0, ge=0)


class WatchSettings(Model):
    """How the automatic-failover watch decides (see `decide`)."""

    interval_seconds: float = Field(default=2.0, ge=0.2, le=300)
    # Consecutive rounds with a quorum saying "primary down" before a failover.
    failure_rounds: int = Field(default=3, ge=1, le=100)
    # Signals that must agree; the hub's own probe alone never suffices.
    quorum: int = Field(default=2, ge=2, le=3)
    cooldown_seconds: float = Field(default=300, ge=0)
    probe_timeout_seconds: float = Field(default=2.0, gt=0, le=30)


class DrPolicy(Model):
    """Everything Flotilla needs to fail an application over, registered once
    (`flotilla dr register`)."""

    app: str
    namespace: str = Field(default="default", description="Namespace of the database objects.")
    members: list[DrMember]
    dns: DnsRecord
    objectives: Objectives = Field(default_factory=Objectives)
    automatic: bool = False
    watch: WatchSettings = Field(default_factory=WatchSettings)
    # An external HTTP probe of the app through its DNS name (2xx: it takes writes).
    probe_url: str = ""

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        if problem := cluster_name_error(value):
            raise ValueError(problem.replace("cluster name", "application name"))
        return value

    @model_validator(mode="after")
    def _check(self) -> DrPolicy:
        names = [m.cluster for m in self.members]
        if len(names) < 2:
            raise ValueError("a DR policy needs at least two clusters (a primary and a standby)")
        if len(set(names)) != len(names):
            raise ValueError("a cluster is listed twice")
        if len({m.database for m in self.members}) != len(self.members):
            raise ValueError("each cluster's database needs its own name")
        primaries = [m.cluster for m in self.members if m.role == Role.PRIMARY]
        if len(primaries) != 1:
            raise ValueError(f"exactly one cluster must be primary, not {len(primaries)}")
        return self

    @property
    def home(self) -> str:
        """The cluster registered as primary: where failback returns to."""
        return next(m.cluster for m in self.members if m.role == Role.PRIMARY)

    def member(self, cluster: str) -> DrMember:
        for m in self.members:
            if m.cluster == cluster:
                return m
        raise KeyError(cluster)

    def has(self, cluster: str) -> bool:
        return any(m.cluster == cluster for m in self.members)


# --- state of an application -----------------------------------------------------------


class StepRecord(Model):
    """One step of a DR run, timestamped."""

    name: str
    started_at: datetime
    finished_at: datetime | None = None
    ok: bool | None = None  # None while running
    detail: str = ""


class Measurement(Model):
    """What a run measured. RTO: from `down_since` (the last moment the primary was known
    to take writes; the fence for a planned run) to the first verified write on the new
    primary. RPO: the replication gap at promotion, in WAL bytes and seconds of lag."""

    down_since: datetime | None = None
    writable_at: datetime | None = None
    rto_seconds: float | None = None
    rpo_bytes: int | None = None
    rpo_seconds: float | None = None
    # The source's last known position and the target's replayed position at promotion.
    source_lsn: str = ""
    target_lsn: str = ""


class DrOutcome(StrEnum):
    """Values of the FlotillaOutcome search attribute (a subset of rollout Outcome)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


class RunRecord(Model):
    """A finished DR run as the application's record keeps it."""

    id: str  # workflow id
    kind: OpKind
    source: str
    target: str
    epoch: int
    outcome: DrOutcome
    reason: str = ""
    automatic: bool = False
    started_at: datetime
    finished_at: datetime
    steps: list[StepRecord] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)


class ActiveOperation(Model):
    holder: str  # workflow id
    kind: OpKind
    target: str
    epoch: int
    started_at: datetime


class PrimaryHealth(Model):
    """The watch's last view of the primary (recorded on change only)."""

    down: bool = False
    since: datetime | None = None  # when `down` last changed
    last_up_at: datetime | None = None  # last round the primary took writes
    last_lsn: str = ""  # the primary's WAL position that round
    reason: str = ""


class DrAppState(Model):
    """Everything a `DrApp` entity holds; carried over on continue-as-new."""

    policy: DrPolicy
    primary: str
    epoch: int = 0
    operation: ActiveOperation | None = None
    # Clusters that must be fenced as soon as they can be reached (old primaries).
    pending_fences: list[str] = Field(default_factory=list)
    health: PrimaryHealth = Field(default_factory=PrimaryHealth)
    runs: list[RunRecord] = Field(default_factory=list)
    last_failover_at: datetime | None = None
    registered_at: datetime | None = None
    updated_at: datetime | None = None
    lock_check_seconds: int = 60

    def summary(self) -> AppSummary:
        return AppSummary(
            policy=self.policy,
            primary=self.primary,
            epoch=self.epoch,
            operation=self.operation,
            pending_fences=list(self.pending_fences),
        )


class AppSummary(Model):
    """A small answer of the record's updates and of `read_app` (history stays small:
    the runs are left out)."""

    policy: DrPolicy
    primary: str
    epoch: int
    operation: ActiveOperation | None = None
    pending_fences: list[str] = Field(default_factory=list)


# --- entity messages -------------------------------------------------------------------


class AppRef(Model):
    app: str


class RegisterPolicy(Model):
    policy: DrPolicy


class BeginRequest(Model):
    """Start an operation: refused while another runs (unless its workflow has ended),
    for a target outside the policy, or for a target that already is the primary."""

    app: str
    holder: str
    kind: OpKind
    target: str
    # Failback returns to the home cluster; drills and switchovers name their target.
    require_not_primary: bool = True


class Grant(Model):
    """An operation's admission: its epoch and the application's policy and primary."""

    holder: str
    epoch: int
    primary: str
    policy: DrPolicy
    pending_fences: list[str] = Field(default_factory=list)
    primary_health: PrimaryHealth = Field(default_factory=PrimaryHealth)


class EpochCheck(Model):
    app: str
    holder: str
    epoch: int


class SetPrimary(Model):
    app: str
    holder: str
    epoch: int
    primary: str


class FenceNote(Model):
    """Add (`pending=True`) or clear a pending fence of `cluster`."""

    app: str
    cluster: str
    pending: bool


class FinishRequest(Model):
    app: str
    holder: str
    run: RunRecord


class HealthNote(Model):
    """The watch's view of the primary changed; `last_up_at`: its last good round."""

    app: str
    down: bool
    at: datetime
    last_up_at: datetime | None = None
    last_lsn: str = ""
    reason: str = ""


# --- activity messages -----------------------------------------------------------------


class Fencing(Model):
    """The epoch a write step acts under: checked against the entity before writing."""

    app: str
    holder: str
    epoch: int


class DatabaseRef(Model):
    """A CloudNativePG Cluster, and the host name its application endpoint answers to
    (served at the load balancer of Service `<name>-rw`)."""

    cluster: ClusterRef
    namespace: str
    name: str  # the CloudNativePG Cluster
    host: str = ""


class DatabaseState(Model):
    """A CloudNativePG Cluster as Flotilla reads it."""

    cluster: str  # Kubernetes cluster (inventory name)
    name: str
    reachable: bool = True
    reason: str = ""  # why unreachable / not ready
    designated_primary: str = ""  # spec.replica.primary ("" when not a distributed topology)
    source: str = ""  # spec.replica.source
    is_primary: bool = False  # this Cluster is the topology's primary and promoted
    ready: bool = False  # Ready condition True
    fenced: bool = False
    current_primary: str = ""  # status.currentPrimary (instance)
    demotion_token: str = ""
    promotion_token: str = ""  # spec.replica.promotionToken
    epoch: int = 0  # EPOCH_ANNOTATION
    # From the database itself (the endpoint's status, as pg_current_wal_lsn(),
    # pg_last_wal_replay_lsn() and pg_stat_wal_receiver say); "" / None when unknown.
    written_lsn: str = ""
    replayed_lsn: str = ""
    lag_seconds: float | None = None
    writable: bool | None = None
    # A replica's WALReceiverStreaming condition: True streaming from its source, False
    # with `receiver_reason` (SourceUnreachable, ReplicationStopped, TimelineDiverged).
    streaming: bool | None = None
    receiver_reason: str = ""
    timeline: int = 0
    phase: str = ""
    # The final LSN of a demotion (latestCheckpointREDOLocation of the demotion token).
    demotion_lsn: str = ""
    checked_at: datetime | None = None  # a wait: when it saw the state it waited for


class DatabaseWrite(Model):
    """A write step on one CloudNativePG Cluster under a fencing epoch."""

    db: DatabaseRef
    fencing: Fencing
    primary: str = ""  # demote/promote/rebuild: the new spec.replica.primary
    source: str = ""  # the new spec.replica.source
    promotion_token: str = ""
    fence: bool = True  # fence: True fences, False lifts the fence
    # Rebuild: the Cluster to clone (its spec is the template of the new replica).
    peer: DatabaseRef | None = None


WaitUntil = Literal["promoted", "demoted", "lsn", "replica", "writable"]


class DatabaseWait(Model):
    db: DatabaseRef
    timeout_seconds: float = 300
    # promoted: primary and ready; demoted: a demotion token; lsn: replayed >= `lsn`;
    # replica: streaming from its source and ready; writable: a write is acknowledged.
    until: WaitUntil
    lsn: str = ""


class DnsWrite(Model):
    dns: DnsRecord
    target: str
    fencing: Fencing


class DnsState(Model):
    targets: list[str] = Field(default_factory=list)
    epoch: int = 0
    ttl: int = 0


class ProbeRequest(Model):
    url: str
    timeout_seconds: float = 2.0
    write: bool = True  # POST (a write) rather than GET


class ProbeResult(Model):
    ok: bool
    status: int = 0
    reason: str = ""
    at: datetime | None = None


class WatchSignals(Model):
    """One round of the watch: what each independent signal says of the primary."""

    at: datetime
    hub_ok: bool  # the hub reaches the primary's API and its database is primary and ready
    standby_ok: bool | None  # the standby still streams from the primary (None: unknown)
    client_ok: bool | None  # the external probe through DNS takes a write (None: no probe)
    standby_ready: bool = False  # a standby is ready to be promoted
    primary_lsn: str = ""  # the primary's WAL position, when the hub reads it
    reason: str = ""


class PendingFence(Model):
    """Fence `db` as soon as its cluster answers (a returning old primary)."""

    cluster: str
    db: DatabaseRef
    fencing: Fencing


class Observation(Model):
    """What one round of the watch learned (one activity: record, databases, probe), and
    the pending fences it applied."""

    signals: WatchSignals
    primary: str
    standby: str = ""  # a ready standby to promote ("" none)
    automatic: bool = False
    operation_running: bool = False
    last_failover_at: datetime | None = None
    health_down: bool = False  # what the record says now
    settings: WatchSettings = Field(default_factory=WatchSettings)
    # Databases whose fence is pending (old primaries): fenced the moment they answer.
    pending: list[PendingFence] = Field(default_factory=list)


# --- workflow messages -----------------------------------------------------------------


class DrRequest(Model):
    """Input of Switchover, Failover, Failback and Drill runs."""

    app: str
    target: str = ""  # the cluster to promote ("" : the policy decides)
    automatic: bool = False  # started by the watch
    who: str = ""
    reason: str = ""
    # Failover: when the primary stopped taking writes, if the caller knows better than the
    # application's record (the watch's first failed round).
    down_since: datetime | None = None
    # Timeouts of the waits (catch-up, promotion, replica rebuild).
    wait_seconds: float = Field(default=300, gt=0, le=86400)
    # Switchover: the most the standby may lag before the primary is demoted.
    max_lag_seconds: float = Field(default=30, ge=0)
    # Failover: promote even though the old primary, unreachable for its fence, still
    # takes writes (accepting two primaries until it is fenced).
    force: bool = False
    # The ITSM change that approved the run (told when it starts and ends).
    change: ChangeRef | None = None


class DrProgress(Model):
    """Answer of the `progress` query of every DR run."""

    id: str
    app: str
    kind: OpKind
    source: str = ""
    target: str = ""
    epoch: int = 0
    outcome: DrOutcome = DrOutcome.RUNNING
    reason: str = ""
    steps: list[StepRecord] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    events: int = 0  # operation events emitted so far


class DrResult(Model):
    progress: DrProgress

    @property
    def outcome(self) -> DrOutcome:
        return self.progress.outcome


class WatchState(Model):
    """The watch's state carried over continue-as-new."""

    app: str
    consecutive_down: int = 0
    rounds: int = 0
    awaiting_approval: bool = False
    approved_by: str = ""
    asked_at: datetime | None = None  # when it last asked the fleet-wide budget
    last_signals: WatchSignals | None = None
    last_decision: str = ""
    last_started: str = ""  # id of the last failover it started
    started_at: datetime | None = None  # and when
    last_up_at: datetime | None = None  # the last round the primary took writes
    last_lsn: str = ""  # the primary's WAL position in that round
    # Test hook: stop after this many rounds (0: never).
    max_rounds: int = 0


class StartFailover(Model):
    """The watch asks for a failover run (started as a top-level workflow)."""

    workflow_id: str
    request: DrRequest


class ApproveFailover(Model):
    who: str
    note: str = ""


class GuardState(Model):
    """The fleet-wide blast radius of automatic failovers."""

    max_automatic: int = 2
    interval_seconds: float = 3600
    granted: list[tuple[str, datetime]] = Field(default_factory=list)  # (app, when)


class GuardRequest(Model):
    app: str
    approved_by: str = ""  # an operator's approval bypasses the budget
    # The worker's settings (FLOTILLA_DR_MAX_AUTOMATIC, FLOTILLA_DR_AUTOMATIC_WINDOW).
    max_automatic: int = Field(default=2, ge=0)
    interval_seconds: float = Field(default=3600, gt=0)


class GuardAnswer(Model):
    granted: bool
    reason: str = ""


class DrillRecords(Model):
    runs: list[RunRecord]
