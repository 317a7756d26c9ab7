"""The audit sink: every operation event appended to the audit trail (fleet/store.py).

On when the worker has FLOTILLA_DATABASE_URL (the database the API writes its calls to,
so one export holds both). Idempotent by the event's key: a redelivered event keeps its
first record and number. Opens the database per delivery (sinks hold no connections).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from fleet.audit import AuditEntry
from fleet.events import OperationEvent
from fleet.store import DATABASE_ENV, Store


class AuditSink:
    name = "audit"

    def __init__(self, url: str):
        self._url = url

    def wants(self, event: OperationEvent) -> bool:
        return True

    async def deliver(self, event: OperationEvent) -> None:
        await asyncio.to_thread(self._append, entry(event))

    def _append(self, record: AuditEntry) -> None:
        store = Store(self._url)  # StoreError: the relay retries
        try:
            store.append(record)
        finally:
            store.close()


def entry(event: OperationEvent) -> AuditEntry:
    where = " ".join(
        part for part in (f"wave {event.wave}" * bool(event.wave), event.detail) if part
    )
    change = f" (change {event.change})" if event.change else ""
    return AuditEntry(
        at=event.at,
        principal=event.principal or "flotilla",
        action=f"event.{event.type.value}",
        target=event.cluster or event.workflow_id,
        result=event.outcome or "ok",
        detail=f"{where}{change}".strip()[:500],
        key=event.key,
        workflow_id=event.workflow_id,
        clusters={event.cluster: {}} if event.cluster else {},
    )


def audit_sink(env: Mapping[str, str]) -> AuditSink | None:
    url = env.get(DATABASE_ENV, "")
    return AuditSink(url) if url else None
