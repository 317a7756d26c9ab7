"""DR records seen from outside their workflows: client helpers (CLI, webhook, tests) and
activity wrappers (the DR workflows, which cannot send updates themselves).

Refusals of the `dr-app:<name>` entity become non-retryable ApplicationErrors keeping its
error type (`OperationRunning`, `BadTarget`, `StaleEpoch`, ...) and message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from fleet.dr import (
    GUARD_ID,
    AppRef,
    AppSummary,
    BeginRequest,
    DrAppState,
    DrPolicy,
    EpochCheck,
    FenceNote,
    FinishRequest,
    Grant,
    GuardAnswer,
    GuardRequest,
    GuardState,
    HealthNote,
    RegisterPolicy,
    SetPrimary,
    app_id,
)
from fleet.durations import parse_duration

T = TypeVar("T")

MAX_AUTOMATIC_ENV = "FLOTILLA_DR_MAX_AUTOMATIC"
WINDOW_ENV = "FLOTILLA_DR_AUTOMATIC_WINDOW"


def max_automatic() -> int:
    """Automatic failovers admitted fleet-wide per window before approval is needed."""
    text = os.environ.get(MAX_AUTOMATIC_ENV, "") or "2"
    if not text.isdecimal():
        raise ApplicationError(
            f"{MAX_AUTOMATIC_ENV}: expected a count, not {text!r}",
            type="BadSetting",
            non_retryable=True,
        )
    return int(text)


def automatic_window() -> float:
    text = os.environ.get(WINDOW_ENV, "") or "1h"
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ApplicationError(
            f"{WINDOW_ENV}: {exc}", type="BadSetting", non_retryable=True
        ) from None


def unknown_app(app: str) -> ApplicationError:
    return ApplicationError(
        f"no DR policy for application {app!r}; register it with `flotilla dr register`",
        type="UnknownApp",
        non_retryable=True,
    )


def _refusal(exc: WorkflowUpdateFailedError) -> ApplicationError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return ApplicationError(str(cause), type="InvalidRequest", non_retryable=True)


async def _update(client: Client, app: str, update: str, arg: Any, result_type: type[T]) -> T:
    try:
        return await client.get_workflow_handle(app_id(app)).execute_update(
            update, arg, result_type=result_type
        )
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise unknown_app(app) from None
        raise


# --- client side ---------------------------------------------------------------------------


async def register_policy(client: Client, policy: DrPolicy, *, task_queue: str) -> DrAppState:
    """Creates `dr-app:<app>` on first use (update-with-start) and sets its policy."""
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        "DrApp",
        DrAppState(policy=policy, primary=policy.home),
        id=app_id(policy.app),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"DR record of application {policy.app}",
        static_details="Policy, primary, fencing epoch and runs; see current details.",
    )
    try:
        return await client.execute_update_with_start_workflow(
            "register",
            RegisterPolicy(policy=policy),
            start_workflow_operation=start,
            result_type=DrAppState,
        )
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from None


async def get_app(client: Client, app: str) -> DrAppState | None:
    """The record of `app`, None when there is none."""
    try:
        return await client.get_workflow_handle(app_id(app)).query("state", result_type=DrAppState)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def require_app(client: Client, app: str) -> DrAppState:
    state = await get_app(client, app)
    if state is None:
        raise unknown_app(app)
    return state


async def list_apps(client: Client) -> list[DrAppState]:
    names = [
        wf.id.removeprefix("dr-app:")
        async for wf in client.list_workflows(
            "WorkflowType = 'DrApp' AND ExecutionStatus = 'Running'"
        )
    ]
    found = [await get_app(client, name) for name in sorted(set(names))]
    return [s for s in found if s is not None]


async def check_epoch(client: Client, check: EpochCheck) -> EpochCheck:
    """Raises non-retryable `StaleEpoch` unless `check.holder` runs at the current epoch."""
    return await _update(client, check.app, "check_epoch", check, EpochCheck)


# --- activities ----------------------------------------------------------------------------


async def beating(work: Awaitable[T]) -> T:
    """Awaits `work`, heartbeating every second: the workflow's short heartbeat timeout
    then notices a dead worker in seconds, whatever the call's own timeout."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()


@activity.defn
async def begin_operation(req: BeginRequest) -> Grant:
    return await beating(_update(activity.client(), req.app, "begin", req, Grant))


@activity.defn
async def set_primary(req: SetPrimary) -> AppSummary:
    return await beating(_update(activity.client(), req.app, "set_primary", req, AppSummary))


@activity.defn
async def note_fence(note: FenceNote) -> AppSummary:
    return await beating(_update(activity.client(), note.app, "note_fence", note, AppSummary))


@activity.defn
async def note_health(note: HealthNote) -> AppSummary:
    return await beating(_update(activity.client(), note.app, "note_health", note, AppSummary))


@activity.defn
async def finish_operation(req: FinishRequest) -> AppSummary:
    return await beating(_update(activity.client(), req.app, "finish", req, AppSummary))


@activity.defn
async def read_app(req: AppRef) -> AppSummary:
    return (await beating(require_app(activity.client(), req.app))).summary()


@activity.defn
async def admit_automatic(req: GuardRequest) -> GuardAnswer:
    """Asks the fleet-wide `dr-guard` (created on first use) to admit a failover, under
    the worker's FLOTILLA_DR_MAX_AUTOMATIC per FLOTILLA_DR_AUTOMATIC_WINDOW."""
    req = req.model_copy(
        update={"max_automatic": max_automatic(), "interval_seconds": automatic_window()}
    )
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        "DrGuard",
        GuardState(),
        id=GUARD_ID,
        task_queue=activity.info().task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="Fleet-wide budget of automatic DR failovers",
    )
    try:
        return await activity.client().execute_update_with_start_workflow(
            "admit", req, start_workflow_operation=start, result_type=GuardAnswer
        )
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from None
