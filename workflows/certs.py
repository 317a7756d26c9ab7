"""`CertScan`: the certificate inventory of the fleet, agentless.

Started on demand (`flotilla certs scan`, id `certscan:<id>`) and by the
`flotilla-cert-scan` Temporal Schedule (starters/schedules.py). Clusters are named or chosen
by selector from visibility, resolved from the inventory in chunks, scanned `chunk` per
activity (activities/certs.py), `concurrency` activities at once, and each report is
recorded on its cluster's record (`record_certs`), which sets FlotillaCertExpiry and
FlotillaCertStatus. A cluster that cannot be reached is still recorded with what the hub
and the management cluster know; one that cannot be recorded is listed in `failed`.
Four activities per chunk: 1,000 clusters stay far below history limits.
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
    from activities.certs import record_certificates, scan_certificates
    from activities.inventory import list_cluster_names
    from fleet.certs import (
        CertRecordRequest,
        CertReports,
        CertScanChunk,
        CertScanRequest,
        CertScanResult,
        summarize,
    )
    from fleet.certs_models import CertStatus
    from fleet.events import EventType
    from fleet.models import RecordsQuery
    from fleet.rollout_models import ClusterAccess
    from workflows.cluster_access import resolve_access

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
        try:
            names = req.names
            if not names:
                found = await workflow.execute_activity(
                    list_cluster_names,
                    RecordsQuery(selector=req.selector),
                    start_to_close_timeout=INVENTORY_TIMEOUT,
                    retry_policy=INVENTORY_RETRY,
                    summary="list clusters",
                )
                names = found.names
            access = await resolve_access(names)
        except ActivityError as err:
            raise root_failure(err) from None
        self._result.missing = [n for n in names if n not in access]
        clusters = [access[n] for n in names if n in access]
        self._total = len(clusters)
        operation_attributes("certscan", [c.name for c in clusters])
        self._details()
        gate = asyncio.Semaphore(req.concurrency)
        chunks = [clusters[i : i + req.chunk] for i in range(0, len(clusters), req.chunk)]

        async def one(chunk: list[ClusterAccess]) -> None:
            async with gate:
                await self._scan(chunk, req.alert_seconds)

        await asyncio.gather(*(one(c) for c in chunks))
        self._result.unreachable.sort()
        self._result.clusters = dict(sorted(self._result.clusters.items()))
        self._details()
        await self._tell_expiring()
        return self._result

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

    async def _scan(self, chunk: list[ClusterAccess], alert_seconds: float) -> None:
        span = f"{chunk[0].name}..{chunk[-1].name}" if len(chunk) > 1 else chunk[0].name
        try:
            found: CertReports = await workflow.execute_activity(
                scan_certificates,
                CertScanChunk(clusters=chunk),
                start_to_close_timeout=SCAN_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"scan {span}",
            )
            refused: CertReports = await workflow.execute_activity(
                record_certificates,
                CertRecordRequest(reports=found.reports, alert_seconds=alert_seconds),
                start_to_close_timeout=INVENTORY_TIMEOUT * 4,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=INVENTORY_RETRY,
                summary=f"record {span}",
            )
        except ActivityError as err:
            why = root_failure(err).message
            self._result.failed.update({c.name: why for c in chunk})
            self._details()
            return
        not_recorded = {r.cluster: "; ".join(r.problems) for r in refused.reports}
        for report in found.reports:
            if report.cluster in not_recorded:
                self._result.failed[report.cluster] = not_recorded[report.cluster]
                continue
            self._result.clusters[report.cluster] = summarize(report, alert_seconds)
            if not report.reachable:
                self._result.unreachable.append(report.cluster)
        self._details()

    def _details(self) -> None:
        r = self._result
        done = len(r.clusters) + len(r.failed)
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
