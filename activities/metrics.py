"""Flotilla's own Prometheus metrics, recorded on the worker (never in workflow code).

- Operations: `flotilla_operations_started_total{kind}` and
  `flotilla_operations_total{kind,outcome}` (the honest outcome) and
  `flotilla_operation_events_total{kind,type}`, counted by the `metrics` event sink, which
  the relay delivers to exactly once per event key (per worker process: a key seen twice
  is not counted twice).
- Steps: `flotilla_step_duration_seconds{workflow,step,outcome}`, one observation per
  activity attempt (local ones too) by the `StepMetrics` worker interceptor: `workflow` is
  the workflow type (the operation's per-cluster child, e.g. AddonUpgrade), `step` the
  activity. No cluster label: a 5,000-cluster fleet would make 5,000 series per step.
- Locks: `flotilla_lock_wait_seconds{operation}` (time until a lock was granted) and
  `flotilla_lock_conflicts_total{operation}` (refused because another operation held it).
- Event delivery: `flotilla_event_deliveries_total{sink,outcome}`.
- The fleet (`FleetCollector`): clusters by phase/health/version, per-cluster soonest
  certificate expiry and drifted fields, from a snapshot the worker refreshes
  (starters/telemetry.py); every worker reports the same fleet, so aggregate with max.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from fleet.events import EventType, OperationEvent

STARTS = {EventType.STARTED, EventType.FAILOVER_STARTED}

OPERATIONS_STARTED = Counter(
    "flotilla_operations_started", "Operation runs started, by kind.", ["kind"]
)
OPERATIONS = Counter(
    "flotilla_operations",
    "Operation runs that ended, by kind and outcome (succeeded, halted, aborted, failed...).",
    ["kind", "outcome"],
)
OPERATION_EVENTS = Counter(
    "flotilla_operation_events", "Operation events emitted, by kind and type.", ["kind", "type"]
)
EVENT_DELIVERIES = Counter(
    "flotilla_event_deliveries",
    "Deliveries of operation events to sinks (each attempt), by sink and outcome.",
    ["sink", "outcome"],
)
STEP_SECONDS = Histogram(
    "flotilla_step_duration_seconds",
    "Duration of one attempt of a workflow step (an activity), by workflow type, step and outcome.",
    ["workflow", "step", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
LOCK_WAIT_SECONDS = Histogram(
    "flotilla_lock_wait_seconds",
    "Time from asking for a cluster's lock to getting it, by operation.",
    ["operation"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
LOCK_CONFLICTS = Counter(
    "flotilla_lock_conflicts",
    "Lock requests refused because another operation held the cluster, by operation.",
    ["operation"],
)

SEEN_KEPT = 10_000


class MetricsSink:
    """The `metrics` event sink: counts operations as their events arrive."""

    name = "metrics"

    def __init__(self) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()

    def wants(self, event: OperationEvent) -> bool:
        return True

    async def deliver(self, event: OperationEvent) -> None:
        if event.key in self._seen:
            return
        self._seen[event.key] = None
        while len(self._seen) > SEEN_KEPT:
            self._seen.popitem(last=False)
        OPERATION_EVENTS.labels(event.operation, event.type.value).inc()
        if event.type in STARTS:
            OPERATIONS_STARTED.labels(event.operation).inc()
        if event.final:
            OPERATIONS.labels(event.operation, event.outcome or "unknown").inc()


_METRICS_SINK = MetricsSink()  # one per process: its de-duplication spans deliveries


def metrics_sink(env: Mapping[str, str]) -> MetricsSink | None:
    """Always on unless FLOTILLA_METRICS_EVENTS=0."""
    return None if env.get("FLOTILLA_METRICS_EVENTS", "1") == "0" else _METRICS_SINK


class StepMetrics(Interceptor):
    """Worker interceptor timing every activity attempt into STEP_SECONDS."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TimedActivity(next)


class _TimedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        started = time.monotonic()
        outcome = "error"
        try:
            result = await self.next.execute_activity(input)
            outcome = "ok"
            return result
        finally:
            STEP_SECONDS.labels(info.workflow_type or "", info.activity_type, outcome).observe(
                time.monotonic() - started
            )


@dataclass
class ClusterFacts:
    """What the fleet gauges show of one cluster."""

    name: str
    phase: str
    health: str
    version: str
    cert_expiry: float | None = None  # unix seconds of the soonest certificate expiry
    cert_status: str = ""
    drifted_fields: int | None = None  # None: no drift sweep covers it


@dataclass
class FleetSnapshot:
    clusters: list[ClusterFacts] = field(default_factory=list)
    taken_at: float = 0.0  # unix seconds; 0: never


class FleetCollector(Collector):
    """Yields the fleet gauges from the latest snapshot (replaced whole by `update`, so a
    cluster that left the fleet leaves the gauges too)."""

    def __init__(self) -> None:
        self._snapshot = FleetSnapshot()

    def update(self, snapshot: FleetSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot
        clusters = GaugeMetricFamily(
            "flotilla_clusters",
            "Clusters in the inventory, by phase, health and version.",
            labels=["phase", "health", "version"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        for c in snap.clusters:
            key = (c.phase, c.health, c.version or "unknown")
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            clusters.add_metric(list(key), count)
        yield clusters
        expiry = GaugeMetricFamily(
            "flotilla_cluster_certificate_expiry_timestamp_seconds",
            "When the soonest certificate of a cluster expires (unix time), from the last scan.",
            labels=["cluster", "status"],
        )
        drift = GaugeMetricFamily(
            "flotilla_cluster_drifted_fields",
            "Fields that differ from Git on a cluster, from the latest drift sweep.",
            labels=["cluster"],
        )
        for c in snap.clusters:
            if c.cert_expiry is not None:
                expiry.add_metric([c.name, c.cert_status or "unknown"], c.cert_expiry)
            if c.drifted_fields is not None:
                drift.add_metric([c.name], c.drifted_fields)
        yield expiry
        yield drift
        yield GaugeMetricFamily(
            "flotilla_fleet_refresh_timestamp_seconds",
            "When the fleet gauges were last refreshed from the inventory (unix time).",
            value=snap.taken_at,
        )


FLEET = FleetCollector()
REGISTRY.register(FLEET)
