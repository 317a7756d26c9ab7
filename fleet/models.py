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

    `kind="kubeconfig"`: a kubeconfig file on the worker's host (empty `kubeconfig` means
    the worker's default: `FLOTILLA_KUBECONFIG`, then `KUBECONFIG`, then ~/.kube/config)
    and a context in it.
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


class OperationLock(Model):
    """Admits one mutating operation per cluster. `holder` is the operation's workflow id."""

    holder: str
    operation: str
    acquired_at: datetime


class ClusterRecord(Model):
    """The inventory record of one cluster, held by its `cluster:<name>` entity workflow."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    credential: CredentialRef
    api_endpoint: str = ""
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
    cluster: str
    holder: str
    acquired_at: datetime


class LockRelease(Model):
    """Release the lock if `holder` holds it; a no-op otherwise (idempotent)."""

    cluster: str
    holder: str
    phase: Phase = Phase.ACTIVE  # phase after release


class RecordsQuery(Model):
    """Select inventory records: by names, by label selector (`env=prod,region in (eu,us)`),
    or all when both are empty. Offboarded records are left out unless asked for."""

    names: list[str] = Field(default_factory=list)
    selector: str = ""
    include_offboarded: bool = False


class ClusterRecords(Model):
    records: list[ClusterRecord]
