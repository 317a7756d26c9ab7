"""`EventRelay`: delivers one operation's events to its sinks, `events:<workflow_id>`.

Started by the first event's signal (signal-with-start from activities/events.py
`relay_event`). Per sink, events go out in the order they were emitted, one delivery
activity at a time, retried with backoff up to `DELIVERY_DEADLINE`; sinks are independent,
so a slow or dead one delays only its own queue. A key seen before is dropped (an emit
repeated after a retry or a reset). The relay ends after `IDLE` with nothing to deliver (a
later event starts a new run; sinks are idempotent by key, so nothing doubles) and
continues as new when its history grows.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.events import RELAY_SIGNAL, RELAY_WORKFLOW, deliver_event
    from fleet.events import Delivery, RelayedEvent, RelayState

DELIVERY_TIMEOUT = timedelta(seconds=30)
DELIVERY_DEADLINE = timedelta(hours=24)  # then the event is dropped for that sink (logged)
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
IDLE = timedelta(minutes=10)
SEEN_KEPT = 1000  # keys remembered for de-duplication (events of one operation)


@workflow.defn(name=RELAY_WORKFLOW)
class EventRelay:
    @workflow.init
    def __init__(self, state: RelayState) -> None:
        self._s = state
        self._seen = set(state.seen)
        self._draining: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._delivered = 0
        self._wake = 0

    @workflow.signal(name=RELAY_SIGNAL)
    def event(self, item: RelayedEvent) -> None:
        key = item.event.key
        if key in self._seen:
            return
        self._seen.add(key)
        self._s.seen = [*self._s.seen, key][-SEEN_KEPT:]
        for sink in item.sinks:
            self._s.pending.setdefault(sink, []).append(item.event)
        self._wake += 1

    @workflow.run
    async def run(self, state: RelayState) -> None:
        while True:
            for sink, queue in self._s.pending.items():
                if queue and sink not in self._draining:
                    self._draining[sink] = asyncio.create_task(self._drain(sink))
            self._details()
            if workflow.info().is_continue_as_new_suggested():
                self._stopping = True
                await asyncio.gather(*self._draining.values())
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._s)
            if not await self._next_change(idle=not self._draining):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not any(self._s.pending.values()):
                    return

    async def _next_change(self, *, idle: bool) -> bool:
        """Waits for an event or a drained queue; False after `IDLE` with nothing to do."""
        seen = self._wake
        try:
            await workflow.wait_condition(
                lambda: self._wake != seen,
                timeout=IDLE if idle else None,
                timeout_summary="idle: no events to deliver",
            )
        except TimeoutError:
            return False
        return True

    async def _drain(self, sink: str) -> None:
        queue = self._s.pending[sink]
        while queue and not self._stopping:
            event = queue[0]
            try:
                await workflow.execute_activity(
                    deliver_event,
                    Delivery(sink=sink, event=event),
                    start_to_close_timeout=DELIVERY_TIMEOUT,
                    schedule_to_close_timeout=DELIVERY_DEADLINE,
                    retry_policy=DELIVERY_RETRY,
                    summary=f"{event.type.value} to {sink}",
                )
                self._delivered += 1
            except ActivityError as err:
                workflow.logger.warning(
                    "event %s not delivered to %s: %s", event.key, sink, err.cause or err
                )
            queue.pop(0)
        del self._draining[sink]
        self._wake += 1

    def _details(self) -> None:
        waiting = {s: len(q) for s, q in self._s.pending.items() if q}
        text = ", ".join(f"{s}: {n}" for s, n in sorted(waiting.items())) or "nothing"
        workflow.set_current_details(
            f"events of {self._s.operation_id}: {self._delivered} delivered by this run; "
            f"pending {text}"
        )
