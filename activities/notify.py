"""Notifications: what people should hear about now, to chat and to event consumers.

Two sinks, each on when its setting is present, each taking the events listed in
`FLOTILLA_NOTIFY_EVENTS` (default: halted, awaiting_approval, failover_started,
failover_finished, cert_expiring):

- `slack`: a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...): `POST`
  `{"text": ...}` to the URL in `FLOTILLA_SLACK_WEBHOOK`, a secret reference
  (activities/secrets.py: the URL itself is the credential). Incoming webhooks take no
  idempotency key: a key delivered once by this worker is not posted again, but an answer
  lost in transit can still repeat a message (at least once).
- `cloudevents`: CloudEvents 1.0 over HTTP to `FLOTILLA_CLOUDEVENTS_URL`, in structured
  (`application/cloudevents+json`, the default) or binary (`ce-*` headers, the event as the
  JSON body) mode per `FLOTILLA_CLOUDEVENTS_MODE`. `id` is the event key and `source`
  identifies the run, so consumers de-duplicate on (source, id) as the spec intends.

Messages carry names, outcomes and a Temporal UI link; never a credential.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from temporalio.exceptions import ApplicationError

from activities.secrets import resolve_secret
from fleet.events import EventType, OperationEvent, run_link

DEFAULT_EVENTS = "halted,awaiting_approval,failover_started,failover_finished,cert_expiring"
TIMEOUT = aiohttp.ClientTimeout(total=15)
CE_TYPE_PREFIX = "io.flotilla.operation."
SEEN_KEPT = 10_000


def notify_events(env: Mapping[str, str]) -> set[EventType]:
    text = env.get("FLOTILLA_NOTIFY_EVENTS", DEFAULT_EVENTS)
    return {EventType(t.strip()) for t in text.split(",") if t.strip()}


def _namespace(env: Mapping[str, str]) -> str:
    return env.get("TEMPORAL_NAMESPACE", os.environ.get("TEMPORAL_NAMESPACE", "default"))


async def post(url: str, *, data: bytes, headers: dict[str, str], what: str) -> None:
    """POSTs; 2xx is done, 5xx/408/429/connection errors are retried by the relay, other
    answers are not (a retry cannot fix them). Messages never include the URL."""
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.post(url, data=data, headers=headers) as response,
        ):
            if response.status < 300:
                return
            retry = response.status >= 500 or response.status in (408, 429)
            raise ApplicationError(
                f"{what} answered {response.status} {response.reason}",
                type="NotifyFailed",
                non_retryable=not retry,
            )
    except aiohttp.ClientError as exc:
        raise ApplicationError(f"{what} not reached: {type(exc).__name__}") from None


class Seen:
    """Keys this process delivered (bounded)."""

    def __init__(self) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        while len(self._keys) > SEEN_KEPT:
            self._keys.popitem(last=False)


def headline(event: OperationEvent) -> str:
    dr = event.operation.removeprefix("dr:")  # switchover, failover, failback, drill
    what = {
        EventType.HALTED: "halted",
        EventType.AWAITING_APPROVAL: f"waits for approval of wave {event.wave}",
        EventType.FAILOVER_STARTED: f"{dr} started",
        EventType.FAILOVER_FINISHED: f"{dr} finished: {event.outcome}",
        EventType.CERT_EXPIRING: "certificates expiring",
        EventType.FINISHED: f"finished: {event.outcome}",
    }.get(event.type, event.type.value.replace("_", " "))
    where = f" on {event.cluster}" if event.cluster else ""
    return f"{event.operation} {event.workflow_id}{where} {what}"


class SlackSink:
    name = "slack"

    def __init__(self, webhook_ref: str, events: set[EventType], *, ui_url: str, namespace: str):
        self._ref = webhook_ref
        self._events = events
        self._ui_url = ui_url
        self._namespace = namespace

    def wants(self, event: OperationEvent) -> bool:
        return event.type in self._events

    async def deliver(self, event: OperationEvent) -> None:
        if event.key in _SLACK_SEEN:
            return
        link = run_link(self._ui_url, self._namespace, event.workflow_id, event.run_id)
        text = f"*{headline(event)}*"
        if event.detail:
            text += f"\n{event.detail}"
        if event.change is not None:
            text += f"\nchange {event.change}"
        text += f"\n<{link}|Open in Temporal>"
        url = resolve_secret(self._ref, what="FLOTILLA_SLACK_WEBHOOK")
        body = json.dumps({"text": text}).encode()
        await post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            what="the Slack webhook",
        )
        _SLACK_SEEN.add(event.key)


_SLACK_SEEN = Seen()


def cloud_event(event: OperationEvent, *, namespace: str, ui_url: str) -> dict[str, Any]:
    """The CloudEvents 1.0 attributes and data of `event`."""
    data = event.model_dump(mode="json")
    data["link"] = run_link(ui_url, namespace, event.workflow_id, event.run_id)
    return {
        "specversion": "1.0",
        "id": event.key,
        "source": f"/flotilla/{namespace}/{event.workflow_id}",
        "type": f"{CE_TYPE_PREFIX}{event.type.value}",
        "subject": event.cluster or event.workflow_id,
        "time": event.at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def header_value(value: str) -> str:
    """A CloudEvents HTTP header value: space, '"', '%' and anything outside printable
    ASCII are percent-encoded (UTF-8), as the HTTP binding requires."""
    return "".join(
        c if "\x21" <= c <= "\x7e" and c not in '"%' else quote(c, safe="") for c in value
    )


class CloudEventsSink:
    name = "cloudevents"

    def __init__(self, url: str, mode: str, events: set[EventType], *, ui_url: str, namespace: str):
        if mode not in ("structured", "binary"):
            raise ValueError(f"FLOTILLA_CLOUDEVENTS_MODE is structured or binary, not {mode!r}")
        self._url, self._mode, self._events = url, mode, events
        self._ui_url, self._namespace = ui_url, namespace

    def wants(self, event: OperationEvent) -> bool:
        return event.type in self._events

    async def deliver(self, event: OperationEvent) -> None:
        ce = cloud_event(event, namespace=self._namespace, ui_url=self._ui_url)
        if self._mode == "structured":
            body = json.dumps(ce).encode()
            headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
        else:
            data = ce.pop("data")
            headers = {"Content-Type": ce.pop("datacontenttype")}
            headers |= {f"ce-{name}": header_value(str(value)) for name, value in ce.items()}
            body = json.dumps(data).encode()
        await post(self._url, data=body, headers=headers, what="the CloudEvents endpoint")


def slack_sink(env: Mapping[str, str]) -> SlackSink | None:
    ref = env.get("FLOTILLA_SLACK_WEBHOOK", "")
    if not ref:
        return None
    return SlackSink(
        ref,
        notify_events(env),
        ui_url=env.get("FLOTILLA_UI_URL", "http://localhost:8233"),
        namespace=_namespace(env),
    )


def cloudevents_sink(env: Mapping[str, str]) -> CloudEventsSink | None:
    url = env.get("FLOTILLA_CLOUDEVENTS_URL", "")
    if not url:
        return None
    return CloudEventsSink(
        url,
        env.get("FLOTILLA_CLOUDEVENTS_MODE", "structured"),
        notify_events(env),
        ui_url=env.get("FLOTILLA_UI_URL", "http://localhost:8233"),
        namespace=_namespace(env),
    )
