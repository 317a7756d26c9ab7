"""Client-side rollout helpers for the CLI, webhooks, tests and benches: plan from the
inventory, check the plan live (a dry run of the engine), start, control, watch.

Planning is pure (fleet/waves.py) over the records the inventory returns; the live checks
(add-on exists, Cluster API versions) need cluster credentials, which only the worker has,
so `check_plan` runs the `Rollout` workflow in dry-run mode, which stops after preflight.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from fleet import search
from fleet.config import Settings
from fleet.models import RecordsQuery
from fleet.rollout_models import (
    ApproveRequest,
    ControlEvent,
    ControlRequest,
    Plan,
    RolloutInput,
    RolloutProgress,
    RolloutReport,
    RolloutSpec,
    SkipRequest,
)
from fleet.waves import build_plan
from starters.errors import CliError
from starters.inventory import list_clusters

CONTROLS = ("pause", "resume", "approve", "skip", "abort", "rollback")


def new_rollout_id() -> str:
    """A readable, unique id: UTC date-time plus a short random suffix."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def workflow_id(rollout: str) -> str:
    """Accepts `rollout:k8s:x`, `k8s:x` or `addon:x` and returns the workflow id."""
    return rollout if rollout.startswith("rollout:") else f"rollout:{rollout}"


async def make_plan(client: Client, spec: RolloutSpec) -> Plan:
    """The fixed plan over the current inventory; raises PlanError naming every problem."""
    records = await list_clusters(client, RecordsQuery(selector=spec.selector))
    return build_plan(spec, records)


def _start_options(plan: Plan, task_queue: str | None, *, dry_run: bool = False) -> dict[str, Any]:
    spec = plan.spec
    waves = " -> ".join(f"{w.name} ({len(w.clusters)})" for w in plan.waves)
    dry = ":dry-run" if dry_run else ""
    target = (
        f"Kubernetes {spec.operation.version}"
        if spec.operation.kind == "k8s"
        else f"{spec.operation.describe()} image {spec.operation.image}"
    )
    return dict(
        task_queue=task_queue or Settings.from_env().task_queue,
        static_summary=f"{'Dry run: r' if dry_run else 'R'}ollout of {target} to "
        f"{len(plan.cluster_names())} clusters",
        static_details=f"selector {spec.selector or '(all)'}; waves {waves}",
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(search.KIND, f"rollout:{spec.operation.kind}{dry}")]
        ),
    )


async def check_plan(client: Client, plan: Plan, *, task_queue: str | None = None) -> RolloutReport:
    """Runs the engine's preflight on every planned cluster and changes nothing.

    Raises WorkflowFailureError (type PlanRefused) listing every problem found."""
    return await client.execute_workflow(
        "Rollout",
        RolloutInput(plan=plan, dry_run=True),
        id=f"{plan.spec.workflow_id}:dry-run:{uuid.uuid4().hex[:6]}",
        result_type=RolloutReport,
        **_start_options(plan, task_queue, dry_run=True),
    )


async def start_rollout(
    client: Client, plan: Plan, *, task_queue: str | None = None
) -> WorkflowHandle[Any, RolloutReport]:
    """Starts the run; refuses (CliError) when a run with the same id is still running."""
    try:
        return await client.start_workflow(
            "Rollout",
            RolloutInput(plan=plan),
            id=plan.spec.workflow_id,
            result_type=RolloutReport,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            **_start_options(plan, task_queue),
        )
    except WorkflowAlreadyStartedError:
        raise CliError(
            f"{plan.spec.workflow_id} is already running; pick another --id or control it "
            "with `flotilla ops ...`"
        ) from None


async def control(client: Client, rollout: str, action: str, request: Any) -> ControlEvent:
    """Sends one control Update; a refusal raises WorkflowUpdateFailedError with the
    validator's reason (e.g. "... is not paused")."""
    expected = {"approve": ApproveRequest, "skip": SkipRequest}.get(action, ControlRequest)
    if action not in CONTROLS or not isinstance(request, expected):
        raise ValueError(f"unknown control {action!r} or wrong request type")
    handle = client.get_workflow_handle(workflow_id(rollout))
    return await handle.execute_update(action, request, result_type=ControlEvent)


async def progress(client: Client, rollout: str) -> RolloutProgress:
    handle = client.get_workflow_handle(workflow_id(rollout))
    return await handle.query("progress", result_type=RolloutProgress)


async def report(client: Client, rollout: str) -> RolloutReport:
    """Waits for the run (following continue-as-new) and returns its report."""
    handle = client.get_workflow_handle(workflow_id(rollout), result_type=RolloutReport)
    return await handle.result()
