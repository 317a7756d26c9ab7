"""`flotilla ops`: list, show and watch operation workflows, whatever their type.

An operation is any workflow with the `FlotillaKind` search attribute other than the
`cluster` inventory entities. `show`/`watch` combine the execution's description (status,
static summary, current details, pending activities) with its `progress` query when the
workflow defines one; a workflow without it is shown without progress.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.live import Live
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from fleet import search
from fleet.rollout_models import Outcome
from starters.errors import CliError, failure_message, usage
from starters.render import operation_view
from workflows.registry import OPERATIONS, SUITES

CLOSED_OK = {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CONTINUED_AS_NEW}
# Operation kinds besides each registered rollout kind's `rollout:<kind>`.
BASE_KINDS = ("onboard", "offboard", "health")
_BY_STATUS = {
    WorkflowExecutionStatus.RUNNING: Outcome.RUNNING,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: Outcome.RUNNING,
    WorkflowExecutionStatus.COMPLETED: Outcome.SUCCEEDED,
    WorkflowExecutionStatus.FAILED: Outcome.FAILED,
    WorkflowExecutionStatus.CANCELED: Outcome.CANCELED,
    WorkflowExecutionStatus.TERMINATED: Outcome.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: Outcome.TIMED_OUT,
}


def known_kinds() -> list[str]:
    rollouts = [f"rollout:{o.kind}" for o in OPERATIONS]
    suites = [kind for suite in SUITES for kind in suite.kinds]
    return [*BASE_KINDS, *rollouts, *(f"{k}/cluster" for k in rollouts), *suites]


def outcome(status: WorkflowExecutionStatus | None, recorded: str | None) -> Outcome:
    """The operation's outcome: what the run recorded (FlotillaOutcome) when it completed,
    else what Temporal's status means. COMPLETED alone is not success: a halted rollout
    completes too."""
    status = status or WorkflowExecutionStatus.RUNNING
    if status == WorkflowExecutionStatus.COMPLETED and recorded:
        return Outcome(recorded)
    return _BY_STATUS.get(status, Outcome.FAILED)


def require_success(op: dict[str, Any]) -> None:
    """Raises CliError (exit 1) unless the described operation succeeded, with why."""
    if op["outcome"] != Outcome.SUCCEEDED.value:
        why = op.get("failure") or (op.get("progress") or {}).get("halt_reason") or ""
        raise CliError(f"{op['id']} {op['outcome']}: {why}".rstrip(": "))


def list_query(*, kind: str = "", running: bool = False) -> str:
    """The visibility query for `ops list`: top-level operations unless `kind` names the
    per-cluster children (`rollout:k8s/cluster`)."""
    clauses = [f"{search.KIND.name} != 'cluster'", "ParentWorkflowId IS NULL"]
    if kind:
        if kind not in known_kinds():
            raise usage(f"unknown operation kind {kind!r}; one of {', '.join(known_kinds())}")
        clauses = [f"{search.KIND.name} = '{kind}'"]
    if running:
        clauses.append("ExecutionStatus = 'Running'")
    return " AND ".join(clauses)


async def list_operations(
    client: Client, *, kind: str = "", running: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    rows = []
    async for wf in client.list_workflows(list_query(kind=kind, running=running), limit=limit):
        attrs = wf.typed_search_attributes
        rows.append(
            {
                "id": wf.id,
                "type": wf.workflow_type,
                "kind": attrs.get(search.KIND),
                "outcome": outcome(wf.status, attrs.get(search.OUTCOME)).value,
                "status": wf.status.name if wf.status else "UNKNOWN",
                "started": wf.start_time,
                "closed": wf.close_time,
                "clusters": list(attrs.get(search.CLUSTERS) or []),
            }
        )
    return rows


async def describe_operation(client: Client, workflow_id: str) -> dict[str, Any]:
    """Everything `ops show` prints about the latest run of `workflow_id`."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no operation with workflow id {workflow_id!r}") from None
        raise
    status = desc.status or WorkflowExecutionStatus.RUNNING
    attrs = desc.typed_search_attributes
    op: dict[str, Any] = {
        "id": desc.id,
        "run_id": desc.run_id,
        "type": desc.workflow_type,
        "kind": attrs.get(search.KIND),
        "outcome": outcome(status, attrs.get(search.OUTCOME)).value,
        "status": status.name,
        "started": desc.start_time,
        "closed": desc.close_time,
        "clusters": list(attrs.get(search.CLUSTERS) or []),
        "summary": await desc.static_summary() or await _first_summary(client, desc),
        "details": await current_details(handle),
        "progress": await _progress(handle),
        "pending_activities": [
            {
                "activity": a.activity_type.name,
                "state": PendingActivityState.Name(a.state)
                .removeprefix("PENDING_ACTIVITY_STATE_")
                .lower(),
                "attempt": a.attempt,
                "last failure": a.last_failure.message if a.HasField("last_failure") else "",
            }
            for a in desc.raw_description.pending_activities
        ],
    }
    if status not in CLOSED_OK and status != WorkflowExecutionStatus.RUNNING:
        op["failure"] = await _failure(handle, status)
    return op


async def watch_operation(
    client: Client, workflow_id: str, *, console: Console, interval: float = 1.0
) -> dict[str, Any]:
    """Follows the operation until its run closes and returns the final description.

    On a terminal: a live view. Otherwise (CI logs, pipes): one line per change of status
    or current details, then the final view."""
    op = await describe_operation(client, workflow_id)
    if not console.is_terminal:
        seen = None
        while True:
            line = (op["outcome"], "; ".join((op.get("details") or "").splitlines()))
            if line != seen:
                console.print(f"{op['id']}: {line[0]} {line[1]}".rstrip(), highlight=False)
                seen = line
            if op["outcome"] != Outcome.RUNNING.value:
                break
            await asyncio.sleep(interval)
            op = await describe_operation(client, workflow_id)
        console.print(operation_view(op))
        return op
    with Live(operation_view(op), console=console, refresh_per_second=4) as live:
        while op["outcome"] == Outcome.RUNNING.value:
            await asyncio.sleep(interval)
            op = await describe_operation(client, workflow_id)
            live.update(operation_view(op))
    return op


async def _first_summary(client: Client, desc: WorkflowExecutionDescription) -> str:
    """The static summary of the first run: a run continued-as-new carries none itself."""
    first_run = desc.raw_description.workflow_execution_info.first_run_id
    if not first_run or first_run == desc.run_id:
        return ""
    handle = client.get_workflow_handle(desc.id, run_id=first_run)
    try:
        return await (await handle.describe()).static_summary() or ""
    except RPCError:
        return ""


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """`workflow.set_current_details` text, through the SDK's built-in metadata query.
    Empty when no worker answers (closed runs are replayed by a worker, so this may be
    empty when none is running)."""
    try:
        meta = await asyncio.wait_for(
            handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata), 5
        )
    except Exception:  # no worker, no such query: details are optional
        return ""
    return meta.current_details if isinstance(meta, WorkflowMetadata) else ""


async def _progress(handle: WorkflowHandle[Any, Any]) -> Any:
    """The `progress` query result as plain JSON data, or None when there is none."""
    try:
        return await asyncio.wait_for(handle.query("progress"), 5)
    except Exception:  # no such query, no worker: the view works without progress
        return None


async def _failure(handle: WorkflowHandle[Any, Any], status: WorkflowExecutionStatus) -> str:
    try:
        await asyncio.wait_for(handle.result(follow_runs=False), 5)
    except Exception as exc:
        return failure_message(exc)
    return status.name.lower()
