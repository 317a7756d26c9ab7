"""Messages of the rollout engine: what to change, the plan of waves, controls, progress.

One `Rollout` parent workflow walks a `Plan`; each cluster is a child workflow
(`K8sUpgrade`, `AddonUpgrade`) that takes a `ClusterTask` and returns a `ClusterResult`.
All of it is secret-free: clusters travel as credential references.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from fleet.models import ClusterRef, CredentialRef, ManagementRef, Model

WINDOW_LABEL = "flotilla.io/maintenance-window"


class K8sTarget(Model):
    """Upgrade Kubernetes (control plane, then workers) through Cluster API."""

    kind: Literal["k8s"] = "k8s"
    version: str


class AddonTarget(Model):
    """Set one container's image of a Deployment or DaemonSet."""

    kind: Literal["addon"] = "addon"
    name: str  # the workload's name, e.g. coredns
    namespace: str = "kube-system"
    workload: Literal["deployment", "daemonset"] = "deployment"
    container: str = ""  # "" means the workload's only (or first) container
    image: str

    def describe(self) -> str:
        return f"{self.workload} {self.namespace}/{self.name}"


Operation = Annotated[K8sTarget | AddonTarget, Field(discriminator="kind")]


class RolloutOptions(Model):
    max_concurrent: int = Field(default=5, ge=1, le=500)
    # Failures tolerated before the run halts: a count ("1") or a share ("10%").
    failure_budget: str = "0"
    # The same per wave; "" means only the run-wide budget applies.
    wave_failure_budget: str = ""
    soak_seconds: float = Field(default=0, ge=0)
    approve_between: bool = False
    # Unreachable clusters: skipped and reported (True) or counted as failures (False).
    skip_unreachable: bool = True
    # Rollout-wide maintenance window; a cluster's WINDOW_LABEL label takes precedence.
    window: str = ""
    health_gates: bool = True
    auto_rollback: bool = False  # add-on rollouts only
    cluster_timeout_seconds: float = Field(default=1800, gt=0)
    # Live checks of every planned cluster before the first change (off only for tests
    # whose `child_workflow` touches no cluster).
    preflight: bool = True
    # Per-cluster workflow type; "" picks K8sUpgrade or AddonUpgrade from the operation.
    child_workflow: str = ""


class RolloutSpec(Model):
    """What an operator asks for; `plan` turns it into waves of named clusters."""

    id: str  # the part after rollout:<kind>:
    selector: str = ""
    waves: list[str] = Field(default_factory=lambda: ["canary:1", "rest"])
    operation: Operation
    options: RolloutOptions = Field(default_factory=RolloutOptions)

    @property
    def workflow_id(self) -> str:
        return f"rollout:{self.operation.kind}:{self.id}"


class WaveSpec(Model):
    """One parsed wave: exactly one of count, percent, selector, rest."""

    name: str
    text: str
    count: int | None = None
    percent: float | None = None
    selector: str = ""
    rest: bool = False


class PlannedCluster(Model):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    credential: CredentialRef
    management: ManagementRef | None = None
    version: str = ""

    def ref(self) -> ClusterRef:
        return ClusterRef(name=self.name, credential=self.credential)


class PlannedWave(Model):
    name: str
    text: str
    clusters: list[PlannedCluster]


class Plan(Model):
    """The fixed plan of a run: made once, before anything starts; never re-planned."""

    spec: RolloutSpec
    waves: list[PlannedWave]
    notes: list[str] = Field(default_factory=list)

    def cluster_names(self) -> list[str]:
        return [c.name for w in self.waves for c in w.clusters]


class ClusterStatus(StrEnum):
    PENDING = "pending"
    WAITING = "waiting-window"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    UNCHANGED = "unchanged"  # already at the target
    FAILED = "failed"
    SKIPPED = "skipped"
    UNREACHABLE = "unreachable"
    NOT_STARTED = "not-started"  # the run halted or was aborted first
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"


class ClusterTask(Model):
    """Input of a per-cluster child workflow."""

    rollout_id: str  # the parent's workflow id (lock holder prefix, reports)
    cluster: PlannedCluster
    operation: Operation
    health_gates: bool = True
    timeout_seconds: float = 1800
    rollback: bool = False  # an add-on undo run: skip the health pre-gate, always proceed


class ClusterResult(Model):
    """Outcome of one child. A failing child raises `ClusterFailed` carrying this model."""

    cluster: str
    status: ClusterStatus
    reason: str = ""
    from_version: str = ""
    to_version: str = ""
    changed: bool = False  # the cluster was modified (so an add-on undo applies)


class ClusterProgress(Model):
    name: str
    wave: int
    status: ClusterStatus = ClusterStatus.PENDING
    reason: str = ""
    from_version: str = ""
    to_version: str = ""
    changed: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None


class WaveStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    CHECKING = "checking"
    SOAKING = "soaking"
    AWAITING_APPROVAL = "awaiting-approval"
    DONE = "done"
    HALTED = "halted"
    NOT_STARTED = "not-started"


class WaveProgress(Model):
    index: int
    name: str
    text: str
    status: WaveStatus = WaveStatus.PENDING
    clusters: list[str]
    failures: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunStatus(StrEnum):
    PLANNED = "planned"  # dry run: checked, nothing changed
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    HALTED = "halted"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


class Approval(Model):
    wave: int  # the wave it admitted
    who: str
    note: str = ""
    at: datetime


class ControlEvent(Model):
    action: str  # pause | resume | approve | skip | abort | rollback
    who: str
    reason: str = ""
    at: datetime


class RolloutProgress(Model):
    """Answer of the `progress` query and the state carried across continue-as-new."""

    id: str
    kind: str
    target: str
    status: RunStatus = RunStatus.RUNNING
    paused: bool = False
    current_wave: int = 0
    waves: list[WaveProgress]
    clusters: list[ClusterProgress]
    failures: int = 0
    halt_reason: str = ""
    approvals: list[Approval] = Field(default_factory=list)
    controls: list[ControlEvent] = Field(default_factory=list)
    left: list[str] = Field(default_factory=list)  # planned clusters that left the fleet
    joined: list[str] = Field(default_factory=list)  # matching clusters added mid-run
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rollback_requested: bool = False


class RolloutInput(Model):
    plan: Plan
    dry_run: bool = False
    # Set only by continue-as-new: the state of the run so far.
    progress: RolloutProgress | None = None


class ClusterOutcome(Model):
    name: str
    wave: str
    status: ClusterStatus
    reason: str = ""
    from_version: str = ""
    to_version: str = ""
    started_at: datetime | None = None
    duration_seconds: float | None = None


class RolloutReport(Model):
    """Final result of a run."""

    id: str
    kind: str
    target: str
    status: RunStatus
    halt_reason: str = ""
    outcomes: list[ClusterOutcome]
    approvals: list[Approval] = Field(default_factory=list)
    controls: list[ControlEvent] = Field(default_factory=list)
    left: list[str] = Field(default_factory=list)
    joined: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def count(self, status: ClusterStatus) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


class ControlRequest(Model):
    """Pause, resume, abort or rollback: who asks and why (recorded in the report)."""

    who: str = ""
    reason: str = ""


class ApproveRequest(Model):
    who: str
    note: str = ""


class SkipRequest(Model):
    cluster: str
    who: str = ""
    reason: str = ""


class PreflightRequest(Model):
    """Live checks of some planned clusters before a run touches any (one activity call)."""

    clusters: list[PlannedCluster]
    operation: Operation


class PreflightResult(Model):
    problems: dict[str, str] = Field(default_factory=dict)  # cluster -> what is wrong


# Activity messages (activities/capi.py, activities/addons.py).


class CapiRequest(Model):
    """Address a cluster's Cluster API objects; `version` is the target for set/wait."""

    cluster: str
    management: ManagementRef
    version: str = ""
    timeout_seconds: float = 1800


class CapiObjectState(Model):
    kind: str  # KubeadmControlPlane | MachineDeployment
    name: str
    spec_version: str
    status_version: str = ""  # control planes only (lowest version among its machines)
    replicas: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    generation: int = 0
    observed_generation: int = 0
    failure: str = ""  # a condition reporting an error, as "Type: reason: message"

    def settled_at(self, version: str) -> bool:
        """All replicas run `version` and are ready, and the status is current."""
        caught_up = self.observed_generation >= self.generation
        on_version = self.spec_version == version and (
            self.kind != "KubeadmControlPlane" or self.status_version == version
        )
        return caught_up and on_version and self.updated == self.ready == self.replicas


class CapiState(Model):
    cluster: str
    control_plane: CapiObjectState
    workers: list[CapiObjectState]


class VersionCheck(Model):
    cluster: ClusterRef
    version: str


class VersionReport(Model):
    """What the cluster itself reports: API server version and each node's kubelet."""

    cluster: str
    api_version: str
    nodes: dict[str, str]
    problems: list[str] = Field(default_factory=list)


class WorkloadRef(Model):
    cluster: ClusterRef
    namespace: str
    name: str
    workload: Literal["deployment", "daemonset"]
    container: str = ""


class SetImage(Model):
    workload: WorkloadRef
    image: str


class WaitRollout(Model):
    workload: WorkloadRef
    generation: int
    timeout_seconds: float = 600


class WorkloadState(Model):
    container: str
    image: str
    generation: int = 0
    observed_generation: int = 0
    desired: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    failure: str = ""  # e.g. ProgressDeadlineExceeded: ... or ImagePullBackOff
