"""The fleet's shared records and messages.

Every workflow, update, query and activity takes one of these models and returns one, so
the pydantic data converter can decode them and histories stay readable. Nothing here may
hold a secret: clusters are addressed through `CredentialRef`, which names where a
credential lives, never the credential itself.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from fleet.certs_models import CertReport, CertSummary


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Phase(StrEnum):
    """Lifecycle phase of a cluster record."""

    ONBOARDING = "onboarding"
    ACTIVE = "active"
    UPGRADING = "upgrading"
    FAILING_OVER = "failing-over"
    MAINTENANCE = "maintenance"
    OFFBOARDING = "offboarding"
    OFFBOARDED = "offboarded"


class Health(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


class CredentialRef(Model):
    """Where a worker finds the credential for a cluster; resolved only inside activities.

    `kind="kubeconfig"`: a kubeconfig file (or `:`-separated list) on the worker's host and
    a context in it; an empty `kubeconfig` means the worker's default, in the order
    fleet/kubeconfig.py documents.
    """

    kind: str = "kubeconfig"
    kubeconfig: str = ""
    context: str


class ClusterRef(Model):
    """What a workflow carries to reach a cluster: its name and credential reference."""

    name: str
    credential: CredentialRef


class ManagementRef(Model):
    """Where a cluster's Cluster API objects live: the management cluster and namespace.

    Kubernetes upgrades change `spec.version` of the KubeadmControlPlane
    `<cluster>-control-plane` and MachineDeployments labelled
    `cluster.x-k8s.io/cluster-name=<cluster>` in that namespace.
    """

    credential: CredentialRef
    namespace: str = "default"
    cluster: str


class HealthReport(Model):
    """One health reading of a cluster, as the health-check activity measures it."""

    cluster: str
    health: Health
    reason: str = ""
    api_ready: bool = False
    nodes_total: int = 0
    nodes_ready: int = 0
    system_workloads_total: int = 0
    system_workloads_available: int = 0
    version: str = ""
    checked_at: datetime | None = None


class HealthBatch(Model):
    """Clusters to read the health of in one activity call."""

    clusters: list[ClusterRef]


class HealthReports(Model):
    reports: list[HealthReport]  # in the order of the batch


class OperationLock(Model):
    """Admits one mutating operation per cluster. `holder` is the operation's workflow id."""

    holder: str
    operation: str
    acquired_at: datetime
    # Phase before the lock was taken; restored when a stale lock is broken.
    previous_phase: Phase | None = None


class ClusterRecord(Model):
    """The inventory record of one cluster, held by its `cluster:<name>` entity workflow."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    credential: CredentialRef
    api_endpoint: str = ""
    # The cluster's identity: its kube-system namespace UID (as other fleet tools use).
    # Empty for records onboarded before Flotilla recorded identities.
    uid: str = ""
    management: ManagementRef | None = None
    version: str = ""
    node_count: int = 0
    health: Health = Health.UNKNOWN
    health_reason: str = ""
    phase: Phase = Phase.ONBOARDING
    lock: OperationLock | None = None
    onboarded_at: datetime | None = None
    updated_at: datetime | None = None
    last_health_at: datetime | None = None
    # Why the last stale lock was broken (holder, its status, when); empty if never.
    last_lock_break: str = ""
    # The last certificate scan's verdict (fleet/certs.py); None until the first scan.
    certs: CertSummary | None = None

    def ref(self) -> ClusterRef:
        return ClusterRef(name=self.name, credential=self.credential)


class LockRequest(Model):
    """Ask the `cluster:<name>` entity for its operation lock.

    Granted at once when free or already held by `holder` (so retries are idempotent). When
    held by another live operation: refused with a non-retryable `ClusterLocked` error naming
    the holder, or, with `wait=True`, granted once the holder releases it.
    """

    cluster: str
    holder: str  # the operation's workflow id
    operation: str  # e.g. "onboard", "upgrade", "addon"
    phase: Phase | None = None  # phase while the lock is held (e.g. UPGRADING)
    wait: bool = False


class LockGrant(Model):
    """The lock, and how to reach the cluster (so a holder needs no second read)."""

    cluster: str
    holder: str
    acquired_at: datetime
    credential: CredentialRef | None = None
    management: ManagementRef | None = None


class LockRelease(Model):
    """Release the lock if `holder` holds it; a no-op otherwise (idempotent)."""

    cluster: str
    holder: str
    # Phase after release; None restores the phase the cluster had before the lock.
    phase: Phase | None = Phase.ACTIVE
    # The version the holder's change left the cluster on, recorded with the release (one
    # entity update instead of two); None records nothing.
    version: str | None = None


class RecordsQuery(Model):
    """Select inventory records: by names, by label selector (`env=prod,region in (eu,us)`),
    or all when both are empty. Offboarded records are left out unless asked for."""

    names: list[str] = Field(default_factory=list)
    selector: str = ""
    include_offboarded: bool = False


class ClusterRecords(Model):
    records: list[ClusterRecord]


# --- Inventory entity -------------------------------------------------------------------


class ClusterState(Model):
    """Everything a `ClusterEntity` run holds; carried over on continue-as-new."""

    record: ClusterRecord
    registered: bool = False  # False until the first `register` update has completed
    # While locked, how often the entity checks that the holder's workflow still runs.
    lock_check_seconds: int = 300
    # The last certificate scan's full report (the record keeps only its summary).
    cert_report: CertReport | None = None


class RegisterRequest(Model):
    """Create or refresh a record and take its lock for `holder` (the onboarding run).

    Re-registering an offboarded name re-activates it (phase back to onboarding)."""

    name: str
    credential: CredentialRef
    labels: dict[str, str] = Field(default_factory=dict)
    management: ManagementRef | None = None
    api_endpoint: str = ""
    # The kube-system UID the onboarding found; a live record with another UID refuses it.
    uid: str = ""
    holder: str
    operation: str = "onboard"
    # Facts and a health reading the onboarding took, recorded with the registration.
    version: str = ""
    node_count: int | None = None
    health: HealthReport | None = None


class Registration(Model):
    record: ClusterRecord
    # Phase before this registration; None when the record is new.
    previous_phase: Phase | None = None


class FactsUpdate(Model):
    """Change observed facts of a record; fields left None stay as they are. A phase change
    must be a valid transition, and when `holder` is set it must hold the lock."""

    cluster: str
    holder: str = ""
    version: str | None = None
    node_count: int | None = None
    labels: dict[str, str] | None = None
    api_endpoint: str | None = None
    phase: Phase | None = None


class RetireRequest(Model):
    """Mark a record offboarded; `holder` must hold the lock (or the lock must be free)."""

    cluster: str
    holder: str


class HolderQuery(Model):
    workflow_id: str


class HolderStatus(Model):
    workflow_id: str
    running: bool
    status: str  # RUNNING, COMPLETED, TERMINATED, ..., or NOT_FOUND


# --- Onboarding / offboarding -------------------------------------------------------------


class OnboardRequest(Model):
    """Onboard (or re-onboard, which reconciles) one cluster reached through `credential`."""

    name: str
    credential: CredentialRef
    labels: dict[str, str] = Field(default_factory=dict)
    management: ManagementRef | None = None


class ClusterProbe(Model):
    """What onboarding's probe learned about a cluster before taking its lock."""

    cluster: str
    version: str
    api_endpoint: str
    node_count: int
    uid: str = ""  # kube-system namespace UID; empty when the credential may not read it
    health: HealthReport  # the first health reading
    access: AccessReport  # the permissions onboarding needs that the credential lacks


class Permission(Model):
    verb: str
    resource: str
    group: str = ""
    namespace: str = ""

    def __str__(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} {resource}{where}"


class AccessReport(Model):
    cluster: str
    checked: int
    missing: list[Permission] = Field(default_factory=list)


class BaselineSpec(Model):
    """The onboarding baseline for one cluster; `labels` go into its identity ConfigMap."""

    cluster: ClusterRef
    labels: dict[str, str] = Field(default_factory=dict)


class BaselineResult(Model):
    """Objects as `kind/name`, split by what installing them did."""

    cluster: str
    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)


class BaselineTarget(Model):
    """Remove the baseline from `cluster`, but only if it still is the cluster with
    kube-system UID `uid` (the record's identity)."""

    cluster: ClusterRef
    uid: str


class BaselineRemoval(Model):
    cluster: str
    removed: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)


class Onboarded(Model):
    """What onboarding's write step did: registered the cluster (taking its lock),
    installed the baseline, released the lock with phase active."""

    record: ClusterRecord  # after the release
    baseline: BaselineResult
    previous_phase: Phase | None = None  # before the registration; None for a new record


class OnboardResult(Model):
    record: ClusterRecord
    baseline: BaselineResult
    health: HealthReport


class OffboardRequest(Model):
    """Offboard a cluster. `force` retires the record even when the baseline cannot be
    removed (e.g. the cluster is gone for good)."""

    name: str
    force: bool = False


class OffboardResult(Model):
    record: ClusterRecord
    removal: BaselineRemoval | None = None
    note: str = ""


# --- Cluster identity ------------------------------------------------------------------------


class IdentityClaim(Model):
    """Claim kube-system UID `uid` for the record `cluster` (see `ClusterIdentity`)."""

    uid: str
    cluster: str


class IdentityState(Model):
    """What a `ClusterIdentity` (`cluster-uid:<uid>`) run holds: the record owning the UID."""

    uid: str
    owner: str = ""
    # Why the last owner lost the claim (its record offboarded, ...); empty if never.
    last_release: str = ""


class OwnerQuery(Model):
    cluster: str
    uid: str


class OwnerStatus(Model):
    """Whether record `cluster` still stands for the UID, and why (or why not)."""

    cluster: str
    holds: bool
    why: str


# --- Health sweep -------------------------------------------------------------------------


class SweepRequest(Model):
    """Check every non-offboarded cluster (or those matching `selector`)."""

    selector: str = ""
    concurrency: int = 20


class SweepResult(Model):
    checked: int = 0
    healthy: list[str] = Field(default_factory=list)
    degraded: list[str] = Field(default_factory=list)
    unreachable: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)  # could not be checked or recorded
