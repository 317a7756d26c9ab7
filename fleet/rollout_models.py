"""Messages of the rollout engine: what to change, the plan of waves, controls, progress.

One `Rollout` parent workflow walks a `Plan`; each cluster is a child workflow (the
operation kind's, from workflows/registry.py) that takes a `ClusterTask` and returns a
`ClusterResult`. What changes is the kind's `Target` (fleet/targets.py).
All of it is secret-free: clusters travel as credential references.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fleet.durations import Duration
from fleet.events import ChangeRef
from fleet.models import ClusterRef, CredentialRef, ManagementRef, Model
from fleet.selectors import parse_selector
from fleet.targets import AnyTarget
from fleet.wave_specs import allowed_failures, parse_waves
from fleet.windows import WINDOW_LABEL, parse_window

# Ids become part of workflow ids and URLs: no '/' (child ids use it), nothing to escape.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_SOAK = 30 * 86400.0
MAX_CLUSTER_TIMEOUT = 7 * 86400.0


class RolloutOptions(Model):
    """How a rollout proceeds, for every operation kind. The one declaration of these
    options: the CLI's flags (`cli` names a flag other than `--field-name`) and the webhook's
    request body are generated from it."""

    max_concurrent: int = Field(default=5, ge=1, le=500, description="Clusters at once per wave.")
    failure_budget: str = Field(
        default="0", description="Failures tolerated in the run: a count (1) or a share (10%)."
    )
    wave_failure_budget: str = Field(
        default="", description="Failures tolerated per wave (default: only the run's budget)."
    )
    soak: Duration = Field(
        default=0, ge=0, le=MAX_SOAK, description="Wait after each wave: 0, 30s, 10m, 1h."
    )
    approve_between: bool = Field(
        default=False, description="Wait for an approval naming the next wave before it starts."
    )
    skip_unreachable: bool = Field(
        default=True,
        description="Unreachable clusters: skip and report them, or count them as failures.",
        json_schema_extra={"cli": "--skip-unreachable/--fail-unreachable"},
    )
    window: str = Field(
        default="",
        description="Maintenance window, e.g. 'Sat 02:00-06:00' (UTC); a cluster's "
        f"{WINDOW_LABEL} label takes precedence.",
    )
    health_gates: bool = Field(
        default=True, description="Health gates before/after each cluster and after each wave."
    )
    auto_rollback: bool = Field(
        default=False,
        description="On halt, undo the change where it was made (kinds that can be undone).",
    )
    settle: Duration = Field(
        default=300,
        ge=0,
        le=MAX_CLUSTER_TIMEOUT,
        description="How long a changed cluster may take to report healthy again.",
    )
    approval_timeout: Duration = Field(
        default=7 * 86400,
        gt=0,
        le=MAX_SOAK,
        description="How long the run waits for an approval or a resume before it halts.",
    )
    cluster_timeout: Duration | None = Field(
        default=None,
        gt=0,
        le=MAX_CLUSTER_TIMEOUT,
        description="Time one cluster may take: 30m, 2h (default: the operation's own).",
    )

    @field_validator("failure_budget", "wave_failure_budget")
    @classmethod
    def _budget(cls, value: str) -> str:
        allowed_failures(value, 1)
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if value:
            parse_window(value)
        return value


class RolloutSpec(Model):
    """What an operator asks for; `plan` turns it into waves of named clusters."""

    id: str = Field(pattern=ID_PATTERN, description="Rollout id (the part after rollout:<kind>:).")
    selector: str = Field(default="", description="Label selector of clusters.")
    waves: list[str] = Field(
        default_factory=lambda: ["canary:1", "rest"],
        description="Waves: counts, shares, selectors or rest, e.g. canary:1,50%,rest.",
    )
    operation: AnyTarget
    options: RolloutOptions = Field(default_factory=RolloutOptions)
    change: ChangeRef | None = Field(
        default=None, description="The ITSM change that approved the run (told how it goes)."
    )
    started_by: str = Field(default="", description="Who started the run (a name).")
    four_eyes: bool = Field(
        default=False,
        description="Its starter may not approve its waves (set by the access policy).",
    )

    @field_validator("waves", mode="before")
    @classmethod
    def _one_text(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("waves")
    @classmethod
    def _waves(cls, value: list[str]) -> list[str]:
        parse_waves(value)
        return value

    @field_validator("change", mode="before")
    @classmethod
    def _no_change(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        parse_selector(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> RolloutSpec:
        problems = self.operation.problems()
        if self.options.auto_rollback and not self.operation.undoable:
            problems.append(f"auto_rollback: {self.operation.kind} changes cannot be undone")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def workflow_id(self) -> str:
        return f"rollout:{self.operation.kind}:{self.id}"

    @property
    def cluster_timeout(self) -> float:
        return self.options.cluster_timeout or self.operation.default_cluster_timeout


class PlannedCluster(Model):
    """A cluster as the plan carries it: its name and what the run decides by, nothing
    more, so a 5,000-cluster plan stays far below Temporal's payload limit. How to reach
    the cluster is read from the inventory when it is needed (the lock grant, preflight)."""

    name: str
    version: str = ""  # the version it is known to start from ("" when learned live)
    window: str = ""  # its own maintenance window (the WINDOW_LABEL label), if any


class ClusterAccess(Model):
    """How to reach a cluster, from its inventory record: resolved by activities, never
    carried across a whole run."""

    name: str
    credential: CredentialRef
    management: ManagementRef | None = None
    version: str = ""

    def ref(self) -> ClusterRef:
        return ClusterRef(name=self.name, credential=self.credential)


class ClusterNames(Model):
    """Names of clusters (a resolve request, or a membership answer)."""

    names: list[str]


class ClusterAccessList(Model):
    clusters: list[ClusterAccess]
    missing: list[str] = Field(default_factory=list)  # names with no (active) record


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
    operation: AnyTarget
    health_gates: bool = True
    timeout_seconds: float = 1800
    settle_seconds: float = 300  # the after-change health gate's patience
    rollback: bool = False  # an add-on undo run: skip the health pre-gate, always proceed
    # Who approved what the preflight asked (e.g. a sync's prune guard); "" when nothing
    # was asked or the run started approved.
    approved_by: str = ""


class ClusterResult(Model):
    """Outcome of one child. A failing child raises `ClusterFailed` carrying this model."""

    cluster: str
    status: ClusterStatus
    reason: str = ""
    from_version: str = ""
    to_version: str = ""
    changed: bool = False  # the cluster was modified (so an add-on undo applies)
    # How the child reached the cluster (from its lock grant): the parent's wave health
    # check reuses it instead of reading every record again. None before the lock.
    access: ClusterAccess | None = None


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
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    HALTED = "halted"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


class Outcome(StrEnum):
    """How a run ended, the same in its report, the FlotillaOutcome search attribute, the
    CLI's exit code (0 only for SUCCEEDED) and the webhook's answers."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_SKIPS = "completed-with-skips"  # done, but some clusters were skipped
    HALTED = "halted"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"  # the workflow itself failed (refused plan, bad input)
    CANCELED = "canceled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed-out"


def outcome_of(status: RunStatus, clusters: list[ClusterStatus]) -> Outcome:
    """The outcome a run's status and its clusters' statuses add up to."""
    if status == RunStatus.COMPLETED:
        skipped = {ClusterStatus.SKIPPED, ClusterStatus.UNREACHABLE, ClusterStatus.NOT_STARTED}
        return Outcome.SUCCEEDED_WITH_SKIPS if skipped & set(clusters) else Outcome.SUCCEEDED
    return {
        RunStatus.HALTED: Outcome.HALTED,
        RunStatus.ABORTED: Outcome.ABORTED,
        RunStatus.ROLLED_BACK: Outcome.ROLLED_BACK,
    }.get(status, Outcome.RUNNING)


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
    # What the preflight asked an approval for before the first wave (cluster -> why).
    asks: dict[str, str] = Field(default_factory=dict)
    controls: list[ControlEvent] = Field(default_factory=list)
    left: list[str] = Field(default_factory=list)  # planned clusters that left the fleet
    joined: list[str] = Field(default_factory=list)  # matching clusters added mid-run
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rollback_requested: bool = False
    events: int = 0  # operation events emitted so far (the next key's sequence number)


class RolloutInput(Model):
    plan: Plan
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
    outcome: Outcome
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
    """Admits the wave named `wave` (the one waiting); refused for any other wave, so an
    approval can never be replayed onto a later wave."""

    who: str
    wave: str
    note: str = ""


class SkipRequest(Model):
    cluster: str
    who: str = ""
    reason: str = ""


class PreflightRequest(Model):
    """Live checks of some planned clusters before a run touches any (one activity call)."""

    clusters: list[ClusterAccess]
    operation: AnyTarget


class PlanCheckRequest(Model):
    """Input of the PlanCheck workflow: the live checks of a plan, changing nothing."""

    plan: Plan


class PreflightResult(Model):
    problems: dict[str, str] = Field(default_factory=dict)  # cluster -> what is wrong
    # cluster -> why changing it needs an approval first: the run waits (up to its
    # approval_timeout) for an approval of its first wave before anything changes.
    asks: dict[str, str] = Field(default_factory=dict)


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
