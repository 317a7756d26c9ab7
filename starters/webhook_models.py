"""Request and response bodies of the webhook API (starters/webhook.py).

Start requests take the fields of `flotilla upgrade|addon start`, by the same names (the
CLI's `--kind` of a workload is `workload` here, as `kind` says k8s or addon). Unknown
fields are refused, so a typo in a pipeline fails loudly instead of being ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _StartBase(Body):
    selector: str = ""
    waves: str = "canary:1,50%,rest"
    max_concurrent: int = Field(default=5, ge=1, le=500)
    failure_budget: str = "0"
    wave_failure_budget: str = ""
    soak: str = "0"  # 0, 30s, 10m, 1h
    approve_between: bool = False
    skip_unreachable: bool = True
    window: str = ""
    health_gates: bool = True


class K8sStart(_StartBase):
    """POST /v1/rollouts for a Kubernetes upgrade (`flotilla upgrade start`)."""

    kind: Literal["k8s"]
    to: str  # target version, e.g. v1.31.2
    cluster_timeout: str = "30m"


class AddonStart(_StartBase):
    """POST /v1/rollouts for an add-on image (`flotilla addon start`)."""

    kind: Literal["addon"]
    name: str = Field(min_length=1)
    image: str = Field(min_length=1)
    namespace: str = "kube-system"
    workload: Literal["deployment", "daemonset"] = "deployment"
    container: str = ""
    cluster_timeout: str = "10m"
    auto_rollback: bool = False


StartBody = Annotated[K8sStart | AddonStart, Field(discriminator="kind")]
START_BODY: TypeAdapter[K8sStart | AddonStart] = TypeAdapter(StartBody)


class StartResponse(BaseModel):
    """201 when this delivery started the run, 200 (created false) when an earlier
    delivery with the same Idempotency-Key did. `run_id` is the first run's id, stable
    across the rollout's continue-as-new between waves."""

    workflow_id: str
    run_id: str
    status: str  # RUNNING, COMPLETED, FAILED... (Temporal's execution status)
    created: bool
    clusters: list[str] = Field(default_factory=list)  # planned clusters (on creation)


class ApproveBody(Body):
    """An ITSM approval of the wave that waits; recorded as `who` with the change id.
    `wave` names the wave approved (as in `progress.waves[].name`): the rollout refuses
    the approval (409) unless that wave is the one waiting."""

    approver: str = Field(min_length=1)
    wave: str = Field(min_length=1)
    change_id: str = ""
    comment: str = ""


class ControlBody(Body):
    """Pause, resume or abort: who asks and why (kept in the rollout report)."""

    who: str = Field(min_length=1)
    reason: str = ""
    change_id: str = ""


class ControlResponse(BaseModel):
    workflow_id: str
    action: str
    who: str
    reason: str
    at: datetime


class OperationResponse(BaseModel):
    """GET /v1/operations/{id}: the latest run's status, its `progress` query when it has
    one, and its result once it completed."""

    workflow_id: str
    run_id: str
    first_run_id: str
    type: str
    status: str
    progress: dict[str, Any] | None = None
    result: Any = None


class ErrorResponse(BaseModel):
    error: str  # one readable line


class Health(BaseModel):
    status: Literal["ok"] = "ok"
