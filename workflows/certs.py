"""`CertScan`: the certificate inventory of the fleet, agentless.

Started on demand (`flotilla certs scan`, id `certscan:<id>`) and by the
`flotilla-cert-scan` Temporal Schedule (starters/schedules.py). Clusters are named or chosen
by selector from visibility and handed out by name, `chunk` per activity, `concurrency`
activities at once (activities/certs.py `scan_and_record`): each reads how to reach its
clusters from the inventory, scans them and records each report on its cluster's record
(`record_certs`), which sets FlotillaCertExpiry and FlotillaCertStatus, and returns only
the summaries. A cluster that cannot be reached is still recorded with what the hub and
the management cluster know; one that cannot be recorded is listed in `failed`. One
activity per chunk: 1,000 clusters stay far below history limits.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.common import (
    HEARTBEAT,
    INVENTORY_RETRY,
    INVENTORY_TIMEOUT,
    KUBE_RETRY,
    operation_attributes,
    root_failure,
)
from workflows.events import emit

with workflow.unsafe.imports_passed_through():
    from activities.certs import scan_and_record
    from activities.inventory import list_cluster_names
    from fleet.certs import CertScanChunk, CertScanRequest, CertScanResult
    from fleet.certs_models import CertStatus
    from fleet.events import EventType
    from fleet.models import RecordsQuery

SCAN_TIMEOUT = timedelta(minutes=10)
# cert_expiring events per scan, one per cluster; beyond this, one event names the rest.
MAX_CERT_EVENTS = 20


@workflow.defn(name="CertScan")
class CertScan:
    def __init__(self) -> None:
        self._result = CertScanResult()
        self._total = 0

    @workflow.query
    def progress(self) -> CertScanResult:
        return self._result

    @workflow.run
    async def run(self, req: CertScanRequest) -> CertScanResult:
        names = list(dict.fromkeys(req.names))
        if not names:
            try:
                found = await workflow.execute_activity(
                    list_cluster_names,
                    RecordsQuery(selector=req.selector),
                    start_to_close_timeout=INVENTORY_TIMEOUT,
                    retry_policy=INVENTORY_RETRY,
                    summary="list clusters",
                )
            except ActivityError as err:
                raise root_failure(err) from None
            names = found.names
        self._total = len(names)
        operation_attributes("certscan", names)
        self._details()
        gate = asyncio.Semaphore(req.concurrency)
        chunks = [names[i : i + req.chunk] for i in range(0, len(names), req.chunk)]

        async def one(chunk: list[str]) -> None:
            async with gate:
                await self._scan(chunk, req.alert_seconds)

        await asyncio.gather(*(one(c) for c in chunks))
        r = self._result
        r.unreachable.sort()
        missing = set(r.missing)
        r.missing = [n for n in names if n in missing]
        r.clusters = dict(sorted(r.clusters.items()))
        self._details()
        await self._tell_expiring()
        return r

    async def _tell_expiring(self) -> None:
        """A cert_expiring event for each cluster whose soonest certificate is inside its
        threshold (or expired)."""
        due = [
            (name, s)
            for name, s in self._result.clusters.items()
            if s.status in (CertStatus.EXPIRING, CertStatus.EXPIRED)
        ]
        for seq, (name, summary) in enumerate(due[:MAX_CERT_EVENTS], start=1):
            when = summary.soonest.isoformat() if summary.soonest else "unknown"
            await emit(
                EventType.CERT_EXPIRING,
                seq=seq,
                operation="certscan",
                cluster=name,
                detail=f"{summary.status.value}: {summary.source or 'a certificate'} "
                f"expires {when} ({summary.expiring} inside the threshold)",
            )
        if rest := [name for name, _ in due[MAX_CERT_EVENTS:]]:
            await emit(
                EventType.CERT_EXPIRING,
                seq=MAX_CERT_EVENTS + 1,
                operation="certscan",
                detail=f"{len(rest)} more clusters: {', '.join(rest[:50])}",
            )

    async def _scan(self, chunk: list[str], alert_seconds: float) -> None:
        span = f"{chunk[0]}..{chunk[-1]}" if len(chunk) > 1 else chunk[0]
        try:
            part: CertScanResult = await workflow.execute_activity(
                scan_and_record,
                CertScanChunk(names=chunk, alert_seconds=alert_seconds),
                start_to_close_timeout=SCAN_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"scan and record {span}",
            )
        except ActivityError as err:
            why = root_failure(err).message
            self._result.failed.update(dict.fromkeys(chunk, why))
            self._details()
            return
        self._result.clusters.update(part.clusters)
        self._result.unreachable += part.unreachable
        self._result.missing += part.missing
        self._result.failed.update(part.failed)
        self._details()

    def _details(self) -> None:
        r = self._result
        done = len(r.clusters) + len(r.failed) + len(r.missing)
        counts = ", ".join(
            f"{r.count(status)} {status.value}"
            for status in (CertStatus.EXPIRED, CertStatus.EXPIRING, CertStatus.OK)
        )
        line = f"scanned {done}/{self._total}: {counts}; {len(r.unreachable)} unreachable"
        if r.failed:
            line += f", {len(r.failed)} not recorded"
        if r.missing:
            line += f"; not in the inventory: {', '.join(r.missing)}"
        workflow.set_current_details(line)
