"""`FleetHealthSweep`: read the health of every cluster and record it in the inventory.

Started by the `flotilla-health-sweep` Temporal Schedule (starters/schedules.py). Checks run
`concurrency` at a time; a cluster that cannot be checked or recorded is listed in
`failed` without failing the sweep. Each cluster costs two activities, so one sweep stays
far below history limits up to a few thousand clusters.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.health import check_cluster_health
    from activities.inventory import get_cluster_records, record_cluster_health
    from fleet.models import ClusterRecord, Health, RecordsQuery, SweepRequest, SweepResult
    from workflows.common import (
        HEALTH_HEARTBEAT,
        HEALTH_TIMEOUT,
        INVENTORY_RETRY,
        INVENTORY_TIMEOUT,
        KUBE_RETRY,
        operation_attributes,
        root_failure,
    )


@workflow.defn(name="FleetHealthSweep")
class FleetHealthSweep:
    def __init__(self) -> None:
        self._result = SweepResult()
        self._total = 0

    @workflow.query
    def progress(self) -> SweepResult:
        return self._result

    @workflow.run
    async def run(self, req: SweepRequest) -> SweepResult:
        try:
            found = await workflow.execute_activity(
                get_cluster_records,
                RecordsQuery(selector=req.selector),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary="list clusters",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        records = found.records
        self._total = len(records)
        operation_attributes("health", [r.name for r in records])
        self._details()
        gate = asyncio.Semaphore(max(1, req.concurrency))

        async def one(record: ClusterRecord) -> None:
            async with gate:
                await self._check(record)

        await asyncio.gather(*(one(r) for r in records))
        for names in (self._result.healthy, self._result.degraded, self._result.unreachable):
            names.sort()
        self._result.failed.sort()
        return self._result

    async def _check(self, record: ClusterRecord) -> None:
        try:
            report = await workflow.execute_activity(
                check_cluster_health,
                record.ref(),
                start_to_close_timeout=HEALTH_TIMEOUT,
                heartbeat_timeout=HEALTH_HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"health of {record.name}",
            )
            await workflow.execute_activity(
                record_cluster_health,
                report,
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"record health of {record.name}",
            )
        except ActivityError as err:
            workflow.logger.warning(
                "health of %s not recorded: %s",
                record.name,
                root_failure(err).message,
                extra={"cluster": record.name},
            )
            self._result.failed.append(record.name)
        else:
            bucket = {
                Health.HEALTHY: self._result.healthy,
                Health.DEGRADED: self._result.degraded,
                Health.UNREACHABLE: self._result.unreachable,
            }.get(report.health, self._result.failed)
            bucket.append(record.name)
        self._result.checked += 1
        self._details()

    def _details(self) -> None:
        r = self._result
        workflow.set_current_details(
            f"checked {r.checked}/{self._total}: {len(r.healthy)} healthy, "
            f"{len(r.degraded)} degraded, {len(r.unreachable)} unreachable, {len(r.failed)} failed"
        )
