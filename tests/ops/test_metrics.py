"""The worker's /metrics after a real add-on rollout on the lab: Flotilla's metrics with
the right labels and the Temporal SDK's runtime metrics, parsed with prometheus_client's
text parser; and the probes. The worker is `python worker.py` in a subprocess, as deployed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from fleet.addon_target import AddonTarget
from fleet.rollout_models import Outcome, RolloutOptions, RolloutSpec
from starters import rollouts
from starters.api import create_app, start_site
from starters.api_auth import Auth
from starters.telemetry import free_port
from tests.conftest import RunningWorker
from tests.workflows.rollout_support import eventually
from tests.workflows.test_rollout_lab import COREDNS, suite_clusters
from tests.workflows.worker_process import spawn_worker, stop

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(url: str) -> tuple[Samples, set[str]]:
    """Samples by name, and the metric family names, from a Prometheus text page."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())


async def status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


async def test_rollout_metrics_on_the_worker(
    worker: RunningWorker, lab: Any, tmp_path: Path
) -> None:
    queue = f"metrics-{uuid.uuid4().hex[:6]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = spawn_worker(
        worker.client,
        queue,
        kubeconfig=str(lab.kubeconfig),
        log=tmp_path / "worker.log",
        env={
            "FLOTILLA_METRICS_ADDRESS": f"127.0.0.1:{port}",
            "FLOTILLA_METRICS_FLEET_INTERVAL": "1",
        },
    )
    try:

        async def ready() -> bool | None:
            try:
                return await status(f"{base}/readyz") == 200 or None
            except aiohttp.ClientError:
                return None

        await eventually(ready)
        assert await status(f"{base}/livez") == 200
        async with suite_clusters(worker, lab, 2) as names:
            spec = RolloutSpec(
                id=uuid.uuid4().hex[:8],
                selector=f"suite={names[0].rsplit('-', 1)[0]}",
                waves=["canary:1,rest"],
                operation=AddonTarget(name="coredns", image=f"{COREDNS}-m"),
                options=RolloutOptions(max_concurrent=2),
            )
            plan = await rollouts.make_plan(worker.client, spec)
            handle = await rollouts.start_rollout(worker.client, plan, task_queue=queue)
            report = await handle.result()
            assert report.outcome == Outcome.SUCCEEDED, report.halt_reason

            async def counted() -> tuple[Samples, set[str]] | None:
                samples, families = await scrape(f"{base}/metrics")
                done = value(samples, "flotilla_operations_total", kind="addon")
                listed = value(samples, "flotilla_clusters", phase="active")
                return (samples, families) if done and listed >= 2 else None

            samples, families = await eventually(counted)
    finally:
        stop(process)
    assert value(samples, "flotilla_operations_total", kind="addon", outcome="succeeded") == 1
    assert value(samples, "flotilla_operations_started_total", kind="addon") == 1
    assert value(samples, "flotilla_operation_events_total", kind="addon", type="wave_started") == 2
    steps = dict(workflow="AddonUpgrade", step="set_workload_image", outcome="ok")
    assert value(samples, "flotilla_step_duration_seconds_count", **steps) == 2
    assert value(samples, "flotilla_step_duration_seconds_sum", **steps) > 0
    assert value(samples, "flotilla_lock_wait_seconds_count") >= 2
    # per cluster, from the engine through the SDK's workflow meter
    clusters = dict(kind="addon", status="succeeded")
    assert value(samples, "flotilla_cluster_duration_seconds_count", **clusters) == 2
    buckets = {
        float(labels["le"]): v
        for labels, v in samples["flotilla_cluster_duration_seconds_bucket"]
        if clusters.items() <= labels.items()
    }
    assert buckets[7200.0] == 2 and 14400.0 in buckets  # Flotilla's buckets, up to hours
    assert value(samples, "flotilla_event_deliveries_total", sink="metrics", outcome="ok") >= 4
    assert value(samples, "flotilla_fleet_refresh_timestamp_seconds") > 0
    # The Temporal SDK's runtime metrics, in Prometheus conventions, on the same page.
    sdk = {name for name in families if name.startswith("temporal_")}
    assert "temporal_workflow_completed" in sdk, sorted(sdk)[:20]
    assert value(samples, "temporal_workflow_completed_total", workflow_type="Rollout") >= 1
    # the SDK metrics deploy/ alerts and graphs on
    assert {"temporal_workflow_task_schedule_to_start_latency_seconds"} <= sdk
    assert {"temporal_worker_task_slots_used"} <= sdk


async def test_api_metrics_and_probes(worker: RunningWorker) -> None:
    runner, url = await start_site(
        create_app(auth=Auth(token="t"), client=worker.client), host="127.0.0.1", port=0
    )
    try:
        assert await status(f"{url}/livez") == 200
        assert await status(f"{url}/readyz") == 200
        assert await status(f"{url}/v1/overview") == 401
        samples, _ = await scrape(f"{url}/metrics")
    finally:
        await runner.cleanup()
    requests = "flotilla_api_requests_total"
    assert value(samples, requests, route="/readyz", method="GET", code="200") >= 1
    assert value(samples, requests, route="/v1/overview", method="GET", code="401") >= 1
    assert value(samples, "flotilla_api_request_duration_seconds_count", route="/livez") >= 1
