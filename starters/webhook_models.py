"""Request and response bodies of the webhook API (starters/api.py).

A start request is a rollout spec: `operation` (the kind and its target's fields, e.g.
`{"kind": "k8s", "version": "v1.31.2"}`), `selector`, `waves` and `options` (RolloutOptions:
the same options as the CLI's flags, by field name). Unknown fields are refused, so a typo
in a pipeline fails loudly instead of being ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from fleet.rollout_models import RolloutOptions
from workflows.registry import OPERATIONS


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _start_request() -> type[Body]:
    """POST /v1/rollouts: a rollout spec without its id (the Idempotency-Key is the id).
    Made from the registered operation kinds' targets and RolloutOptions, so the body and
    its OpenAPI schema follow them."""
    targets = tuple(operation.target for operation in OPERATIONS)
    target: Any = Annotated[Union[targets], Field(discriminator="kind")]  # noqa: UP007
    return create_model(
        "StartRequest",
        __base__=Body,
        __doc__=_start_request.__doc__,
        operation=(target, Field(description="What to change: `kind` and that kind's fields.")),
        selector=(str, Field(default="", description="Label selector of clusters.")),
        waves=(
            str | list[str],
            Field(default="canary:1,50%,rest", description="Waves, e.g. canary:1,50%,rest."),
        ),
        options=(RolloutOptions, Field(default_factory=RolloutOptions)),
        change=(
            str,
            Field(default="", description="ITSM change told how the run goes: servicenow:CHG1."),
        ),
    )


StartRequest = _start_request()
START_BODY: TypeAdapter[Any] = TypeAdapter(StartRequest)


class StartResponse(BaseModel):
    """201 when this delivery started the run, 200 (created false) when an earlier
    delivery with the same Idempotency-Key did. `run_id` is the first run's id, stable
    across the rollout's continue-as-new between waves."""

    workflow_id: str
    run_id: str
    # The outcome: running, succeeded, completed-with-skips, halted, aborted, rolled-back,
    # failed... (what to trust: Temporal's COMPLETED also covers a halted rollout).
    status: str
    temporal_status: str  # RUNNING, COMPLETED, FAILED... (Temporal's execution status)
    created: bool
    clusters: list[str] = Field(default_factory=list)  # planned clusters (on creation)


class ApproveBody(Body):
    """An approval of the wave that waits, recorded as the authenticated principal with
    the change id. `wave` names the wave approved (as in `progress.waves[].name`): the
    rollout refuses the approval (409) unless that wave is the one waiting. `approver`
    (optional) is the person an ITSM tool approves for; it goes into the note, never
    replaces the principal."""

    wave: str = Field(min_length=1)
    approver: str = ""
    change_id: str = ""
    comment: str = ""


class ControlBody(Body):
    """Pause, resume, abort or rollback: why (kept in the rollout report, with the
    authenticated principal as who asked). `who` is accepted for older clients and
    ignored."""

    who: str = ""
    reason: str = ""
    change_id: str = ""


class SkipBody(Body):
    """Skip a cluster of the run that has not started yet."""

    cluster: str = Field(min_length=1)
    reason: str = ""


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
    status: str  # the outcome, as in StartResponse
    temporal_status: str
    progress: dict[str, Any] | None = None
    result: Any = None


class ErrorResponse(BaseModel):
    error: str  # one readable line


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class GitPushBody(BaseModel):
    """POST /v1/git/push: a commit pushed to a desired-state repository. Shaped like a Git
    host's push event (`after`, `ref`; other fields of such payloads are ignored); `repo`
    is the repository as the worker reaches it (path or URL)."""

    model_config = ConfigDict(extra="ignore")

    repo: str = Field(min_length=1, description="Git repository the worker reads.")
    after: str = Field(pattern=r"^[0-9a-f]{40}$", description="The pushed commit's SHA.")
    ref: str = Field(default="", description="The pushed ref, e.g. refs/heads/main.")
    pusher: str = Field(default="", description="Who pushed (recorded as who started it).")


class DrStartBody(Body):
    """POST /v1/dr/{app}/{action}: start a switchover, failover, failback or drill.
    `target` names the cluster to promote (default: the policy's); the run's id is
    `<action>:<app>:<Idempotency-Key>`, so a repeated delivery never starts a second."""

    who: str = ""  # the person a pipeline acts for (noted); the principal is recorded
    target: str = ""
    reason: str = ""
    change_id: str = ""
    # failover: promote even if the unfenceable old primary still takes writes
    force: bool = False
