"""A sink that records what it is given, in this process (the test worker's), so tests
see deliveries exactly as a real sink would get them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from activities import events
from fleet.events import OperationEvent


@dataclass
class RecordingSink:
    name: str = "recording"
    received: list[OperationEvent] = field(default_factory=list)

    def wants(self, event: OperationEvent) -> bool:
        return True

    async def deliver(self, event: OperationEvent) -> None:
        if all(e.key != event.key for e in self.received):
            self.received.append(event)

    def of(self, workflow_id: str) -> list[OperationEvent]:
        return [e for e in self.received if e.workflow_id == workflow_id]


@contextmanager
def recording_sink() -> Iterator[RecordingSink]:
    """Configures a RecordingSink on every worker of this process while the block runs."""
    sink = RecordingSink()

    def factory(env: Mapping[str, str]) -> RecordingSink:
        return sink

    events.SINK_FACTORIES.append(factory)
    try:
        yield sink
    finally:
        events.SINK_FACTORIES.remove(factory)
