"""Event delivery, worker side: the configured sinks, the relay hand-off and one delivery.

`relay_event` (a local activity of the emitting workflow) asks the worker's configuration
which sinks want the event and, when any does, signals it to the operation's relay workflow
(`events:<workflow_id>`, started on the first event: signal-with-start). `deliver_event`
(an activity of the relay) hands one event to one sink. Sinks come from `SINK_FACTORIES`:
each factory reads the worker's environment and returns a sink, or None when it is not
configured. Settings (URLs, credential references) stay on the worker; history and the
relay carry only sink names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import itsm, metrics, notify
from activities.audit_sink import audit_sink
from fleet.events import Delivery, EventSink, OperationEvent, RelayedEvent, RelayState

RELAY_WORKFLOW = "EventRelay"  # workflows/event_relay.py declares it under this name
RELAY_SIGNAL = "event"

log = logging.getLogger("flotilla.events")

SinkFactory = Callable[[Mapping[str, str]], EventSink | None]

# Every kind of sink a worker can deliver to; add a factory here to add a sink.
SINK_FACTORIES: list[SinkFactory] = [
    metrics.metrics_sink,
    itsm.itsm_sink,
    notify.slack_sink,
    notify.cloudevents_sink,
    audit_sink,
]


def relay_id(workflow_id: str) -> str:
    return f"events:{workflow_id}"


def configured_sinks(env: Mapping[str, str] | None = None) -> dict[str, EventSink]:
    """The sinks this worker's environment configures, by name (read on every call: sinks
    hold no connections, and tests change the environment)."""
    env = os.environ if env is None else env
    sinks: dict[str, EventSink] = {}
    for factory in SINK_FACTORIES:
        try:
            sink = factory(env)
        except ValueError as exc:  # a bad setting disables its sink, not the others
            log.warning("event sink not configured: %s", exc)
            continue
        if sink is not None:
            sinks[sink.name] = sink
    return sinks


@activity.defn
async def relay_event(event: OperationEvent) -> list[str]:
    """Signals `event` to its operation's relay, started if need be; returns the sinks
    that want it (none: nothing is started)."""
    sinks = [name for name, sink in configured_sinks().items() if sink.wants(event)]
    if sinks:
        await activity.client().start_workflow(
            RELAY_WORKFLOW,
            RelayState(operation_id=event.workflow_id),
            id=relay_id(event.workflow_id),
            task_queue=activity.info().task_queue,
            start_signal=RELAY_SIGNAL,
            start_signal_args=[RelayedEvent(event=event, sinks=sinks)],
            static_summary=f"events of {event.workflow_id}",
        )
    return sinks


@activity.defn
async def deliver_event(delivery: Delivery) -> None:
    """Delivers one event to one sink; the sink is idempotent by the event's key."""
    sink = configured_sinks().get(delivery.sink)
    if sink is None:
        raise ApplicationError(
            f"sink {delivery.sink!r} is not configured on this worker",
            type="SinkNotConfigured",
            non_retryable=True,
        )
    activity.logger.info(
        "delivering %s to %s", delivery.event.key, delivery.sink, extra={"sink": delivery.sink}
    )
    try:
        await sink.deliver(delivery.event)
    except BaseException:
        metrics.EVENT_DELIVERIES.labels(delivery.sink, "error").inc()
        raise
    metrics.EVENT_DELIVERIES.labels(delivery.sink, "ok").inc()
