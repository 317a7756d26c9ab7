"""`emit`: how a workflow tells the outside world what happened (fleet/events.py).

One awaited call per event. It hands the event to a local activity that signals the
operation's relay (workflows/event_relay.py), which does the slow part; when no sink wants
the event nothing is started. Emitting never fails or stalls the run: a hand-off that
still fails after its retries is logged and the run goes on. Runs recorded before events
existed replay without them (`workflow.patched`).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.events import relay_event
    from fleet.events import ChangeRef, EventType, OperationEvent

PATCH = "operation-events"
HANDOFF_TIMEOUT = timedelta(seconds=10)
HANDOFF_DEADLINE = timedelta(minutes=2)
HANDOFF_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
)


async def emit(
    event_type: EventType,
    *,
    seq: int,
    operation: str,
    principal: str = "",
    change: ChangeRef | None = None,
    wave: str | None = None,
    cluster: str | None = None,
    outcome: str | None = None,
    detail: str = "",
) -> None:
    """Emits the run's event number `seq` (the caller counts it in state that survives
    continue-as-new: the key `<workflow_id>/<seq>` must never be reused for another event)."""
    if not workflow.patched(PATCH):
        return
    info = workflow.info()
    event = OperationEvent(
        key=f"{info.workflow_id}/{seq}",
        type=event_type,
        operation=operation,
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        wave=wave,
        cluster=cluster,
        outcome=outcome,
        principal=principal,
        change=change,
        detail=detail,
        at=workflow.now(),
    )
    try:
        await workflow.execute_local_activity(
            relay_event,
            event,
            start_to_close_timeout=HANDOFF_TIMEOUT,
            schedule_to_close_timeout=HANDOFF_DEADLINE,
            retry_policy=HANDOFF_RETRY,
            summary=f"event {event_type.value}",
        )
    except ActivityError as err:
        workflow.logger.warning("event %s not handed off: %s", event.key, err.cause or err)
