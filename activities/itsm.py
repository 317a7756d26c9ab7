"""ITSM write-back: a run started with a change reference tells that change how it goes.

The `itsm` event sink turns each event of a run carrying `change` into a `ChangeUpdate`
(a work note, and sometimes a state) for the change system named by `change.system`.
Adapters implement `ChangeSystem`; the first is ServiceNow's Table API on `change_request`:

- the change is found by number: `GET /api/now/table/change_request?sysparm_query=
  number=<id>&sysparm_fields=sys_id,number,state&sysparm_limit=1`;
- idempotency: every note starts with `[flotilla <event key>]`, and before writing, the
  change's work notes are searched for that marker (`GET /api/now/table/sys_journal_field?
  sysparm_query=element_id=<sys_id>^element=work_notes^valueLIKE[flotilla <key>]`), so a
  retry after a lost answer never writes a note twice (the integration user needs read
  access to sys_journal_field);
- the note (and state) is written with `PATCH /api/now/table/change_request/<sys_id>`
  `{"work_notes": ..., "state": ...}`: Scheduled (-2) -> Implement (-1) when the run
  starts, Implement -> Review (0) when it ends; a change in any other state keeps it
  (closing the change stays with its owner).

Settings: `FLOTILLA_SERVICENOW_URL` (the instance, e.g. https://acme.service-now.com) and
`FLOTILLA_SERVICENOW_AUTH`, a secret reference (activities/secrets.py) whose value is
`user:password` (basic) or `Bearer <token>` (OAuth). 5xx, 429 and connection errors are
retried by the relay; 400/401/403 and an unknown change are not.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import aiohttp
from temporalio.exceptions import ApplicationError

from activities.secrets import resolve_secret
from fleet.events import EventType, OperationEvent, run_link

# The events a change hears about.
ITSM_EVENTS = {
    EventType.STARTED,
    EventType.WAVE_STARTED,
    EventType.AWAITING_APPROVAL,
    EventType.WAVE_APPROVED,
    EventType.PAUSED,
    EventType.RESUMED,
    EventType.HALTED,
    EventType.ABORTED,
    EventType.FINISHED,
    EventType.FAILOVER_STARTED,
    EventType.FAILOVER_FINISHED,
}
TIMEOUT = aiohttp.ClientTimeout(total=20)


class ChangeState(StrEnum):
    IMPLEMENT = "implement"  # the work started
    REVIEW = "review"  # the work ended (whatever the outcome: the note says which)


@dataclass(frozen=True)
class ChangeUpdate:
    change_id: str
    key: str  # idempotency key: an update with a key already written changes nothing
    note: str
    state: ChangeState | None = None


class ChangeSystem(Protocol):
    system: str

    async def update(self, update: ChangeUpdate) -> None: ...


def marker(key: str) -> str:
    return f"[flotilla {key}]"


def note_of(event: OperationEvent, link: str) -> str:
    """The work note for `event`: what happened, in one or two lines, with the run's link."""
    by = f" by {event.principal}" if event.principal else ""
    what = {
        EventType.STARTED: f"Flotilla started {event.operation} run {event.workflow_id}{by}",
        EventType.FAILOVER_STARTED: f"Flotilla started {event.operation} {event.workflow_id}{by}",
        EventType.WAVE_STARTED: f"Wave {event.wave} started",
        EventType.AWAITING_APPROVAL: f"Waiting for approval of wave {event.wave}",
        EventType.WAVE_APPROVED: f"Wave {event.wave} approved{by}",
        EventType.PAUSED: f"Paused{by}",
        EventType.RESUMED: f"Resumed{by}",
        EventType.HALTED: "Halted",
        EventType.ABORTED: f"Aborted{by}",
        EventType.FINISHED: f"Finished: {event.outcome}",
        EventType.FAILOVER_FINISHED: f"Finished: {event.outcome}",
    }.get(event.type, event.type.value)
    text = f"{marker(event.key)} {what}"
    if event.detail:
        text += f": {event.detail}"
    return f"{text}\n{link}"


def state_of(event: OperationEvent) -> ChangeState | None:
    if event.type in (EventType.STARTED, EventType.FAILOVER_STARTED):
        return ChangeState.IMPLEMENT
    if event.final:
        return ChangeState.REVIEW
    return None


class ItsmSink:
    """The `itsm` sink: events of runs with a change reference, to that change's system."""

    name = "itsm"

    def __init__(self, systems: Mapping[str, ChangeSystem], *, ui_url: str, namespace: str):
        self._systems = dict(systems)
        self._ui_url = ui_url
        self._namespace = namespace

    def wants(self, event: OperationEvent) -> bool:
        change = event.change
        return change is not None and change.system in self._systems and event.type in ITSM_EVENTS

    async def deliver(self, event: OperationEvent) -> None:
        assert event.change is not None  # `wants` admitted only events with a change
        link = run_link(self._ui_url, self._namespace, event.workflow_id, event.run_id)
        await self._systems[event.change.system].update(
            ChangeUpdate(
                change_id=event.change.id,
                key=event.key,
                note=note_of(event, link),
                state=state_of(event),
            )
        )


class ServiceNowChanges:
    """`change_request` records through ServiceNow's Table API."""

    system = "servicenow"
    # state values of the change_request state model
    STATES = {ChangeState.IMPLEMENT: ("-2", "-1"), ChangeState.REVIEW: ("-1", "0")}

    def __init__(self, url: str, auth_ref: str):
        self._url = url.rstrip("/")
        self._auth_ref = auth_ref

    def _headers(self) -> dict[str, str]:
        secret = resolve_secret(self._auth_ref, what="FLOTILLA_SERVICENOW_AUTH")
        if secret.lower().startswith("bearer "):
            auth = f"Bearer {secret[7:].strip()}"
        else:
            auth = "Basic " + base64.b64encode(secret.encode()).decode()
        return {"Authorization": auth, "Accept": "application/json"}

    async def update(self, update: ChangeUpdate) -> None:
        async with aiohttp.ClientSession(headers=self._headers(), timeout=TIMEOUT) as session:
            change = await self._find(session, update.change_id)
            sys_id = str(change["sys_id"])
            if await self._noted(session, sys_id, update.key):
                return
            body: dict[str, str] = {"work_notes": update.note}
            if update.state is not None:
                before, after = self.STATES[update.state]
                if str(change.get("state")) == before:
                    body["state"] = after
            url = f"{self._url}/api/now/table/change_request/{sys_id}"
            params = {"sysparm_fields": "sys_id,number,state"}
            await self._call(session, "PATCH", url, params=params, json=body)

    async def _find(self, session: aiohttp.ClientSession, number: str) -> dict[str, Any]:
        params = {
            "sysparm_query": f"number={number}",
            "sysparm_fields": "sys_id,number,state",
            "sysparm_limit": "1",
        }
        found = await self._call(
            session, "GET", f"{self._url}/api/now/table/change_request", params=params
        )
        if not found:
            raise ApplicationError(
                f"ServiceNow has no change_request {number}",
                type="NoSuchChange",
                non_retryable=True,
            )
        record: dict[str, Any] = found[0]
        return record

    async def _noted(self, session: aiohttp.ClientSession, sys_id: str, key: str) -> bool:
        params = {
            "sysparm_query": f"element_id={sys_id}^element=work_notes^valueLIKE{marker(key)}",
            "sysparm_fields": "sys_id",
            "sysparm_limit": "1",
        }
        found = await self._call(
            session, "GET", f"{self._url}/api/now/table/sys_journal_field", params=params
        )
        return bool(found)

    async def _call(
        self, session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
    ) -> Any:
        """The `result` of a Table API call; errors carry ServiceNow's own message."""
        async with session.request(method, url, **kwargs) as response:
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = None
            if response.status < 300 and isinstance(payload, dict):
                return payload.get("result")
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            message = error.get("message") or response.reason or "no answer"
            text = f"ServiceNow {method} {response.url.path}: {response.status} {message}"
            retry = response.status >= 500 or response.status in (408, 429)
            raise ApplicationError(text, type="ServiceNowError", non_retryable=not retry)


def itsm_sink(env: Mapping[str, str]) -> ItsmSink | None:
    url = env.get("FLOTILLA_SERVICENOW_URL", "")
    if not url:
        return None
    systems = {"servicenow": ServiceNowChanges(url, env.get("FLOTILLA_SERVICENOW_AUTH", ""))}
    return ItsmSink(
        systems,
        ui_url=env.get("FLOTILLA_UI_URL", "http://localhost:8233"),
        namespace=env.get("TEMPORAL_NAMESPACE", os.environ.get("TEMPORAL_NAMESPACE", "default")),
    )
