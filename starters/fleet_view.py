"""The fleet on one page: every cluster's record with its soonest certificate expiry and
outstanding drift, and the operations running now with their progress and a Temporal UI
link. Read-only; the overview page (starters/overview.py) and the worker's fleet gauges
(starters/telemetry.py) are built from it.

Records come from the cluster entities (one query each, 32 at a time), drift from the
latest drift sweep of each bundle, operations from visibility plus each run's current
details. `visible` (labels -> bool) narrows clusters and operations to a caller's scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from temporalio.client import Client

from activities.inventory import fetch_records
from fleet.config import Settings
from fleet.events import run_link
from fleet.models import ClusterRecord, RecordsQuery
from starters import ops

MAX_OPERATIONS = 100

Scope = Callable[[dict[str, str]], bool]


class ClusterRow(BaseModel):
    name: str
    labels: dict[str, str]
    version: str
    health: str
    health_reason: str = ""
    phase: str
    lock_holder: str = ""
    lock_operation: str = ""
    cert_expiry: datetime | None = None  # soonest certificate expiry, last scan
    cert_status: str = ""  # ok, expiring, expired, unknown ("" before any scan)
    drifted_fields: int | None = None  # outstanding drift, latest sweeps; None: not swept


class OperationRow(BaseModel):
    id: str
    kind: str
    outcome: str
    progress: str  # the run's current details (first line)
    clusters: list[str]
    started: datetime | None = None
    url: str  # the run in the Temporal UI


class FleetOverview(BaseModel):
    selector: str = ""
    generated_at: datetime
    clusters: list[ClusterRow] = Field(default_factory=list)
    operations: list[OperationRow] = Field(default_factory=list)


async def drift_counts(client: Client) -> dict[str, int]:
    """Outstanding (not corrected) drifted fields per cluster, from the latest sweeps;
    clusters a sweep checked without drift count 0."""
    from starters.cli_sync import latest_drifts  # the CLI's own reading of sweeps

    counts: dict[str, int] = {}
    for sweep in await latest_drifts(client, scan=200):
        for name in sweep.checked_clusters:
            counts.setdefault(name, 0)
        for drift in sweep.drifts:
            if not drift.corrected:
                counts[drift.cluster] = counts.get(drift.cluster, 0) + 1
            else:
                counts.setdefault(drift.cluster, 0)
    return counts


def cluster_row(record: ClusterRecord, drifts: dict[str, int]) -> ClusterRow:
    certs = record.certs
    return ClusterRow(
        name=record.name,
        labels=record.labels,
        version=record.version,
        health=record.health.value,
        health_reason=record.health_reason,
        phase=record.phase.value,
        lock_holder=record.lock.holder if record.lock else "",
        lock_operation=record.lock.operation if record.lock else "",
        cert_expiry=certs.soonest if certs else None,
        cert_status=certs.status.value if certs else "",
        drifted_fields=drifts.get(record.name),
    )


async def running_operations(
    client: Client, *, ui_url: str, clusters: set[str] | None = None
) -> list[OperationRow]:
    """Running top-level operations (newest first); with `clusters`, only those touching
    one of them."""
    listed = await ops.list_operations(client, running=True, limit=MAX_OPERATIONS)
    if clusters is not None:
        listed = [op for op in listed if set(op["clusters"]) & clusters]

    async def row(op: dict[str, object]) -> OperationRow:
        handle = client.get_workflow_handle(str(op["id"]))
        details = await ops.current_details(handle)
        return OperationRow(
            id=str(op["id"]),
            kind=str(op["kind"] or op["type"]),
            outcome=str(op["outcome"]),
            progress=details.splitlines()[0] if details else "",
            clusters=list(op["clusters"]),  # type: ignore[call-overload]
            started=op["started"],
            url=run_link(ui_url, client.namespace, str(op["id"])),
        )

    return list(await asyncio.gather(*(row(op) for op in listed)))


async def fleet_overview(
    client: Client,
    *,
    selector: str = "",
    visible: Scope | None = None,
    ui_url: str | None = None,
) -> FleetOverview:
    """The overview of the clusters matching `selector` (ApplicationError `BadSelector`
    for a malformed one) that `visible` admits, and the operations touching them (all
    running operations when nothing narrows the view)."""
    ui_url = ui_url if ui_url is not None else Settings.from_env().ui_url
    records, drifts = await asyncio.gather(
        fetch_records(client, RecordsQuery(selector=selector)), drift_counts(client)
    )
    if visible is not None:
        records = [r for r in records if visible(r.labels)]
    narrowed = bool(selector) or visible is not None
    names = {r.name for r in records} if narrowed else None
    return FleetOverview(
        selector=selector,
        generated_at=datetime.now(UTC),
        clusters=[cluster_row(r, drifts) for r in records],
        operations=await running_operations(client, ui_url=ui_url, clusters=names),
    )
