"""Client-side rollout helpers for the CLI, webhooks, tests and benches: plan from the
inventory, check the plan live, start, control, watch.

Planning is pure (fleet/waves.py) over the records the inventory returns. The live checks
(add-on exists, Cluster API versions) need cluster credentials, which only the worker has,
so `check_plan` runs the small PlanCheck workflow, after making sure a worker polls.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import TimeoutError as WorkflowTimeoutError
from temporalio.exceptions import WorkflowAlreadyStartedError

from fleet import search
from fleet.config import Settings
from fleet.models import RecordsQuery
from fleet.rollout_models import (
    ControlEvent,
    Outcome,
    Plan,
    PlanCheckRequest,
    RolloutInput,
    RolloutProgress,
    RolloutReport,
    RolloutSpec,
)
from fleet.waves import build_plan
from starters.errors import CliError
from starters.inventory import list_clusters
from workflows.plan_check import PlanCheck
from workflows.rollout import Rollout

# The rollout's control Updates by name (the CLI's and webhook's actions).
CONTROLS: dict[str, Any] = {
    "pause": Rollout.pause,
    "resume": Rollout.resume,
    "approve": Rollout.approve,
    "skip": Rollout.skip,
    "abort": Rollout.abort,
    "rollback": Rollout.rollback,
}
# A plan check is a few API reads per cluster; past this it failed (no live worker).
CHECK_TIMEOUT = timedelta(minutes=5)


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


class NoWorker(CliError):
    """Nothing would run the workflow: no worker polls the task queue."""


class PlanRefused(CliError):
    """The live checks found problems; the message lists them."""


async def require_worker(client: Client, task_queue: str) -> None:
    """Raises CliError at once when no worker has polled `task_queue` lately, instead of
    leaving a run to wait for one."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    if not response.pollers:
        raise NoWorker(
            f"no worker is polling task queue {task_queue!r}; start one "
            "(`flotilla up`, or `python worker.py` with FLOTILLA_TASK_QUEUE) and retry"
        )


async def check_plan(client: Client, plan: Plan, *, task_queue: str | None = None) -> None:
    """Runs the operation's live checks on every planned cluster and changes nothing.

    Raises CliError listing every problem, or when no worker answers."""
    queue = task_queue or Settings.from_env().task_queue
    await require_worker(client, queue)
    try:
        result = await client.execute_workflow(
            PlanCheck.run,
            PlanCheckRequest(plan=plan),
            id=f"{plan.spec.workflow_id}:check:{uuid.uuid4().hex[:6]}",
            task_queue=queue,
            execution_timeout=CHECK_TIMEOUT,
            static_summary=f"Plan check of {plan.spec.operation.describe()} on "
            f"{len(plan.cluster_names())} clusters",
        )
    except WorkflowFailureError as exc:
        if isinstance(exc.cause, WorkflowTimeoutError):
            raise NoWorker(
                f"the plan check got no answer in {CHECK_TIMEOUT.total_seconds():.0f}s: "
                f"is a worker polling task queue {queue!r}?"
            ) from None
        raise
    if result.problems:
        listed = "; ".join(f"{name}: {text}" for name, text in sorted(result.problems.items()))
        raise PlanRefused(f"plan refused, nothing was changed: {listed}")


async def start_rollout(
    client: Client, plan: Plan, *, task_queue: str | None = None
) -> WorkflowHandle[Rollout, RolloutReport]:
    """Starts the run; refuses (CliError) when a run with the same id is still running."""
    spec = plan.spec
    waves = " -> ".join(f"{w.name} ({len(w.clusters)})" for w in plan.waves)
    try:
        return await client.start_workflow(
            Rollout.run,
            RolloutInput(plan=plan),
            id=spec.workflow_id,
            task_queue=task_queue or Settings.from_env().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"Rollout of {spec.operation.describe()} to "
            f"{len(plan.cluster_names())} clusters",
            static_details=f"selector {spec.selector or '(all)'}; waves {waves}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search.KIND, f"rollout:{spec.operation.kind}"),
                    SearchAttributePair(search.OUTCOME, Outcome.RUNNING.value),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        raise CliError(
            f"{spec.workflow_id} is already running; pick another --id or control it "
            "with `flotilla ops ...`"
        ) from None


async def plan_and_start(
    client: Client, spec: RolloutSpec, *, check: bool = True, task_queue: str | None = None
) -> tuple[Plan, WorkflowHandle[Rollout, RolloutReport]]:
    """Plans, checks the plan live (a refused plan starts nothing), then starts."""
    plan = await make_plan(client, spec)
    if check:
        await check_plan(client, plan, task_queue=task_queue)
    return plan, await start_rollout(client, plan, task_queue=task_queue)


async def control(client: Client, rollout: str, action: str, request: Any) -> ControlEvent:
    """Sends one control Update (`action` in CONTROLS); a refusal raises
    WorkflowUpdateFailedError with the validator's reason (e.g. "... is not paused")."""
    update = CONTROLS[action]
    handle = client.get_workflow_handle_for(Rollout.run, workflow_id(rollout))
    event: ControlEvent = await handle.execute_update(update, request)
    return event


async def progress(client: Client, rollout: str) -> RolloutProgress:
    handle = client.get_workflow_handle_for(Rollout.run, workflow_id(rollout))
    return await handle.query(Rollout.progress)


async def report(client: Client, rollout: str) -> RolloutReport:
    """Waits for the run (following continue-as-new) and returns its report."""
    return await client.get_workflow_handle_for(Rollout.run, workflow_id(rollout)).result()
