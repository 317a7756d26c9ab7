"""The Temporal Schedules that run `FleetHealthSweep` and `CertScan` every `interval` seconds."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

from fleet.certs import CertScanRequest
from fleet.config import Settings
from fleet.ids import CERT_SCAN_SCHEDULE_ID, HEALTH_SCHEDULE_ID
from fleet.models import SweepRequest
from workflows.certs import CertScan
from workflows.health import FleetHealthSweep


def health_schedule(interval_seconds: int, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            FleetHealthSweep.run,
            SweepRequest(),
            id=HEALTH_SCHEDULE_ID,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=max(interval_seconds, 600)),
            static_summary="Fleet health sweep",
            static_details="Reads the health of every cluster and records it in the inventory.",
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=interval_seconds))]
        ),
        # A sweep still running when the next is due makes the next one skip.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def put_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Creates the schedule, or replaces an existing one's definition with it (idempotent)."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)


async def ensure_health_schedule(
    client: Client, *, interval_seconds: int | None = None, task_queue: str | None = None
) -> None:
    """Creates the `flotilla-health-sweep` schedule, or updates it to this interval and task
    queue when it exists. Idempotent. An interval of 0 deletes it."""
    settings = Settings.from_env()
    interval = settings.health_interval if interval_seconds is None else interval_seconds
    queue = task_queue or settings.task_queue
    handle = client.get_schedule_handle(HEALTH_SCHEDULE_ID)
    if interval <= 0:
        with contextlib.suppress(RPCError):  # already absent
            await handle.delete()
        return
    await put_schedule(client, HEALTH_SCHEDULE_ID, health_schedule(interval, queue))


def cert_scan_schedule(interval_seconds: int, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            CertScan.run,
            CertScanRequest(),
            id=CERT_SCAN_SCHEDULE_ID,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=max(interval_seconds, 1800)),
            static_summary="Fleet certificate scan",
            static_details="Reads every certificate expiry and trust pin of every cluster and "
            "records the soonest expiry on its record (FlotillaCertExpiry, FlotillaCertStatus).",
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=interval_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_cert_scan_schedule(
    client: Client, *, interval_seconds: int | None = None, task_queue: str | None = None
) -> None:
    """Creates or updates the `flotilla-cert-scan` schedule (FLOTILLA_CERT_SCAN_INTERVAL,
    default 6 h). Idempotent. An interval of 0 deletes it."""
    settings = Settings.from_env()
    interval = settings.cert_scan_interval if interval_seconds is None else interval_seconds
    queue = task_queue or settings.task_queue
    handle = client.get_schedule_handle(CERT_SCAN_SCHEDULE_ID)
    if interval <= 0:
        with contextlib.suppress(RPCError):  # already absent
            await handle.delete()
        return
    await put_schedule(client, CERT_SCAN_SCHEDULE_ID, cert_scan_schedule(interval, queue))
