"""Operation events: what a run tells the outside world (ITSM changes, chat, CloudEvents
consumers, metrics, the audit store) as it goes.

A workflow emits an `OperationEvent` with one call (workflows/events.py `emit`); a
per-operation relay workflow hands it to every configured `EventSink` through activities
with retries (activities/events.py), so a slow or dead sink delays only its own deliveries
and never the operation. `key` (`<workflow_id>/<seq>`, seq counted by the emitting run and
carried across continue-as-new) is the idempotency key every sink honours. Events carry
names and references only: no credential, no URL with a token.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

from pydantic import Field, model_validator

from fleet.models import Model


class EventType(StrEnum):
    STARTED = "started"
    WAVE_STARTED = "wave_started"
    AWAITING_APPROVAL = "awaiting_approval"
    WAVE_APPROVED = "wave_approved"
    PAUSED = "paused"
    RESUMED = "resumed"
    HALTED = "halted"
    ABORTED = "aborted"
    CLUSTER_FINISHED = "cluster_finished"
    FINISHED = "finished"
    FAILOVER_STARTED = "failover_started"
    FAILOVER_FINISHED = "failover_finished"
    CERT_EXPIRING = "cert_expiring"


# The last event of a run: sinks that report an ending (ITSM, metrics) key on these.
FINAL = {EventType.FINISHED, EventType.FAILOVER_FINISHED}


class ChangeRef(Model):
    """A change record in an ITSM that approved the run, e.g. servicenow:CHG0030001."""

    system: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="e.g. servicenow")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="e.g. CHG0030001")

    def __str__(self) -> str:
        return f"{self.system}:{self.id}"

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        """`servicenow:CHG0030001` (or a bare id, meaning ServiceNow) reads as a ref."""
        if isinstance(value, str):
            system, _, ident = value.rpartition(":")
            return {"system": system or "servicenow", "id": ident}
        return value


class OperationEvent(Model):
    """One thing that happened to an operation run."""

    key: str  # <workflow_id>/<seq>: the idempotency key of every delivery
    type: EventType
    operation: str  # kind: k8s, addon, certs-renew, dr:failover, certscan ...
    workflow_id: str
    run_id: str = ""
    wave: str | None = None
    cluster: str | None = None
    outcome: str | None = None  # the run's honest outcome (Outcome / DrOutcome value)
    principal: str = ""  # who started (or approved, paused...): a name, never a credential
    change: ChangeRef | None = None
    detail: str = ""  # one line for people
    at: datetime

    @property
    def final(self) -> bool:
        return self.type in FINAL


def run_link(ui_url: str, namespace: str, workflow_id: str, run_id: str = "") -> str:
    """A run's page in the Temporal Web UI (its latest run when `run_id` is empty)."""
    link = f"{ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/"
    link += quote(workflow_id, safe="")
    return f"{link}/{quote(run_id, safe='')}/history" if run_id else link


class EventSink(Protocol):
    """Where events go. `deliver` is idempotent by `event.key` (a retried or repeated
    delivery changes nothing the first one did); it raises to have the relay retry, or a
    non-retryable ApplicationError for an event it can never take."""

    name: str

    def wants(self, event: OperationEvent) -> bool: ...

    async def deliver(self, event: OperationEvent) -> None: ...


class RelayedEvent(Model):
    """An event on its way to the relay, with the sinks that want it (decided worker-side
    from the worker's configuration, so the relay's history names sinks, not settings)."""

    event: OperationEvent
    sinks: list[str]


class Delivery(Model):
    """One event to one sink (the delivery activity's input)."""

    sink: str
    event: OperationEvent


class RelayState(Model):
    """The relay's state, carried across its continue-as-new: what is still to deliver per
    sink, and the keys already taken (a repeated emit is dropped)."""

    operation_id: str  # the emitting workflow's id
    pending: dict[str, list[OperationEvent]] = Field(default_factory=dict)
    seen: list[str] = Field(default_factory=list)
