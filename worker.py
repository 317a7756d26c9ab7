"""The Flotilla worker: runs every workflow and activity on one task queue.

`python worker.py` (or `python -m worker`) connects with fleet.connect (TEMPORAL_* env
config), polls `FLOTILLA_TASK_QUEUE` and stops gracefully on SIGINT/SIGTERM. It serves
Prometheus metrics (its own and the Temporal SDK's) and liveness/readiness probes on
`FLOTILLA_METRICS_ADDRESS` (starters/telemetry.py). Tests and the local stack use
`build_worker` / `run_worker`. Operation kinds come from the registry
(workflows/registry.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import access, baseline, health, inventory, onboarding
from activities.metrics import StepMetrics
from fleet.config import Settings
from workflows.cluster import ClusterEntity, ClusterIdentity
from workflows.health import FleetHealthSweep
from workflows.offboarding import Offboard
from workflows.onboarding import Onboard
from workflows.plan_check import PlanCheck
from workflows.registry import OPERATIONS, SUITES
from workflows.rollout import Rollout

# What every worker runs besides the operation kinds of the registry.
WORKFLOWS: list[type] = [
    ClusterEntity,
    ClusterIdentity,
    Onboard,
    Offboard,
    FleetHealthSweep,
    Rollout,
    PlanCheck,
]

ACTIVITIES: list[Callable[..., Any]] = [
    inventory.acquire_cluster_lock,
    inventory.release_cluster_lock,
    inventory.get_cluster_records,
    inventory.list_cluster_names,
    inventory.resolve_clusters,
    inventory.record_cluster_health,
    inventory.retire_cluster,
    inventory.describe_lock_holder,
    inventory.check_identity_owner,
    access.probe_cluster,
    onboarding.register_and_install,
    baseline.remove_baseline,
    health.check_cluster_health,
    health.check_clusters_health,
]

# Sync (kubernetes client) activities run on this many threads; also the activity slot count.
MAX_CONCURRENT_ACTIVITIES = 64
# Synchronous local activities (a child's short reads and health gates) run on the same
# thread pool as activities: the pool has a thread for every slot of both, so an activity
# never waits in the pool's queue after it started (its heartbeat timeout runs from there).
MAX_CONCURRENT_LOCAL_ACTIVITIES = 64

# Workflow runs kept in memory between their tasks. Every cluster has two long-lived runs
# (its entity and its identity) that a rollout touches (lock, facts, release): a run that
# fell out of the cache is rebuilt by replaying its history in a new sandbox, the worker's
# largest cost at 1,000 clusters with the SDK's default of 1,000. Room for 2,000 clusters
# plus their operations; a cached run costs tens of KB.
MAX_CACHED_WORKFLOWS = 5000

# Modules the workflow sandbox takes as they are instead of executing them again for every
# workflow run (the sandbox's largest cost at fleet scale: a run of a child re-imported
# its workflow modules). Flotilla's own modules keep no mutable module state a run could
# leak into another; workflow code still reads time and randomness only through
# `workflow.*` (ruff and review hold that, the sandbox no longer catches it in these).
PASSED_THROUGH = ("workflows", "fleet", "activities", "pydantic", "pydantic_core", "yaml")


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox with PASSED_THROUGH modules shared across runs."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def all_workflows() -> list[type]:
    """What a worker runs (and a replayer replays): the core workflows, every registry
    kind's child and every suite's workflows."""
    children = [operation.child for operation in OPERATIONS]
    return WORKFLOWS + children + [w for suite in SUITES for w in suite.workflows]


def all_activities() -> list[Callable[..., Any]]:
    """What a worker runs: the core activities, every registry kind's and every suite's.

    Every synchronous one is defined with `no_thread_cancel_exception=True`: the SDK
    otherwise cancels a thread's activity by raising an exception asynchronously in it,
    which can land between a lock's acquire and its `try` (logging's handler lock, a
    urllib3 pool's) and leave the lock taken for good: every thread and the event loop
    then wait on it and the worker stops (a 200-cluster CA rotation stalled so). Their
    waits see a cancellation through `activity.is_cancelled()` (activities/polling.py)."""
    activities = list(ACTIVITIES)
    for operation in OPERATIONS:
        activities += [a for a in operation.activities if a not in activities]
    for suite in SUITES:
        activities += [a for a in suite.activities if a not in activities]
    return activities


def build_worker(
    client: Client,
    *,
    task_queue: str,
    max_concurrent_activities: int = MAX_CONCURRENT_ACTIVITIES,
) -> Worker:
    """A worker for every Flotilla workflow and activity, every operation kind in the
    registry (tests add kinds there first) and every suite (DR, certificate scan, sync
    plans and drift sweeps); its thread pool shuts down with it."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=all_workflows(),
        activities=all_activities(),
        workflow_runner=workflow_runner(),
        max_cached_workflows=MAX_CACHED_WORKFLOWS,
        activity_executor=ThreadPoolExecutor(
            max_concurrent_activities + MAX_CONCURRENT_LOCAL_ACTIVITIES,
            thread_name_prefix="activity",
        ),
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_local_activities=MAX_CONCURRENT_LOCAL_ACTIVITIES,
        graceful_shutdown_timeout=timedelta(seconds=10),
        interceptors=[StepMetrics()],
    )


async def run_worker(
    client: Client,
    task_queue: str,
    *,
    stop: asyncio.Event | None = None,
    polling: Callable[[bool], None] | None = None,
) -> None:
    """Runs until `stop` is set (or forever), then shuts down gracefully; `polling` is told
    when the worker starts and stops polling (readiness)."""
    worker = build_worker(client, task_queue=task_queue)
    stop = stop or asyncio.Event()
    async with worker:
        if polling is not None:
            polling(True)
        await stop.wait()
        if polling is not None:
            polling(False)
    executor = worker.config().get("activity_executor")
    if isinstance(executor, ThreadPoolExecutor):
        executor.shutdown(wait=False, cancel_futures=True)


async def main() -> None:
    from fleet.connect import connect
    from starters import telemetry
    from starters.schedules import ensure_cert_scan_schedule, ensure_health_schedule

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    runtime, sdk_metrics = telemetry.sdk_runtime()
    client = await connect(runtime=runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log = logging.getLogger("flotilla.worker")
    try:  # every deployment sweeps fleet health, not only `flotilla up`
        await ensure_health_schedule(client, task_queue=settings.task_queue)
        await ensure_cert_scan_schedule(client, task_queue=settings.task_queue)
    except RPCError as exc:
        log.warning("could not ensure the health/cert-scan schedules: %s", exc.message)
    probes = telemetry.WorkerProbes(client)
    site = None
    if settings.metrics_address:
        routes = telemetry.probe_routes(sdk_url=sdk_metrics, ready=probes.ready)
        site = await telemetry.serve(settings.metrics_address, routes)
    gauges = asyncio.create_task(
        telemetry.refresh_fleet(client, settings.metrics_fleet_interval, stop)
    )
    log.info("polling task queue %s", settings.task_queue)

    def polling(on: bool) -> None:
        probes.polling = on

    try:
        await run_worker(client, settings.task_queue, stop=stop, polling=polling)
    finally:
        gauges.cancel()
        if site is not None:
            await site.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
