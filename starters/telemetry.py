"""What a process of Flotilla exposes to its platform: Prometheus metrics and probes.

The worker serves, on `FLOTILLA_METRICS_ADDRESS` (host:port, "" disables):

- `/metrics`: Flotilla's own metrics (activities/metrics.py) followed by the Temporal SDK's
  runtime metrics (`temporal_*`: workflow/activity task latencies, slots, polls, sticky
  cache...). The SDK serves those on a loopback port of its own (a `Runtime` with
  `PrometheusConfig`); this endpoint appends that text, so one scrape target has both.
- `/livez`: 200 while the process answers; `/readyz`: 200 once the worker polls its task
  queue and Temporal answers a health check, else 503 with the reason.

The fleet gauges are refreshed every `FLOTILLA_METRICS_FLEET_INTERVAL` seconds from
visibility (phase, health, version and certificate attributes of the cluster entities, no
query per cluster) and the latest drift sweeps. The API serves the same /metrics (its own
process's metrics) and probes (starters/api.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities.metrics import FLEET, ClusterFacts, FleetSnapshot
from fleet import search
from fleet.models import Phase

log = logging.getLogger("flotilla.telemetry")

API_REQUESTS = Counter(
    "flotilla_api_requests",
    "API requests answered, by route, method and status code.",
    ["route", "method", "code"],
)
API_SECONDS = Histogram(
    "flotilla_api_request_duration_seconds",
    "Time to answer an API request, by route and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

Check = Callable[[], Awaitable[str]]  # "" when ready, else why not
# Seconds: a cluster takes from moments (unchanged) to hours (a control plane upgrade).
CLUSTER_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdk_runtime() -> tuple[Runtime, str]:
    """A Temporal SDK runtime exporting its metrics in Prometheus conventions (`_total`
    counters, units in names, seconds) on a loopback port; returns it and that URL."""
    address = f"127.0.0.1:{free_port()}"
    config = PrometheusConfig(
        bind_address=address,
        counters_total_suffix=True,
        unit_suffix=True,
        durations_as_seconds=True,
        histogram_bucket_overrides={"flotilla_cluster_duration": CLUSTER_BUCKETS},
    )
    runtime = Runtime(telemetry=TelemetryConfig(metrics=config))
    return runtime, f"http://{address}/metrics"


def split_address(address: str) -> tuple[str, int]:
    """host:port (host defaults to all interfaces)."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"not host:port: {address!r}")
    return host or "0.0.0.0", int(port)


async def exposition(sdk_url: str = "") -> bytes:
    """This process's metrics, and the SDK runtime's when `sdk_url` is given (skipped,
    with a comment, when it does not answer)."""
    text = generate_latest(REGISTRY)
    if not sdk_url:
        return text
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(sdk_url) as response,
        ):
            response.raise_for_status()
            sdk = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return text + f"# Temporal SDK metrics unavailable: {type(exc).__name__}\n".encode()
    return text + (sdk if sdk.endswith(b"\n") or not sdk else sdk + b"\n")


def probe_routes(*, sdk_url: str = "", ready: Check | None = None) -> list[web.RouteDef]:
    """/metrics, /livez and /readyz for an aiohttp application."""

    async def metrics(request: web.Request) -> web.Response:
        body = await exposition(sdk_url)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def livez(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        why = await ready() if ready is not None else ""
        if why:
            return web.Response(status=503, text=f"not ready: {why}\n")
        return web.Response(text="ok\n")

    return [
        web.get("/metrics", metrics),
        web.get("/livez", livez),
        web.get("/readyz", readyz),
    ]


def temporal_check(client: Client) -> Check:
    """Ready when the Temporal frontend answers a gRPC health check within 3 s."""

    async def check() -> str:
        try:
            ok = await asyncio.wait_for(client.service_client.check_health(), 3)
        except Exception as exc:  # any failure is "not ready", with its name
            return f"Temporal at {client.service_client.config.target_host}: {exc or type(exc)}"
        return "" if ok else "Temporal reports not serving"

    return check


@dataclass
class WorkerProbes:
    """The worker's readiness: polling (set by the worker) and Temporal reachable."""

    client: Client
    polling: bool = False
    started: float = field(default_factory=time.time)

    async def ready(self) -> str:
        if not self.polling:
            return "the worker is not polling yet"
        return await temporal_check(self.client)()


async def fleet_snapshot(client: Client) -> FleetSnapshot:
    """The fleet gauges' data from visibility and the latest drift sweeps."""
    from starters.fleet_view import drift_counts

    listing = f'{search.KIND.name} = "cluster" AND ExecutionStatus = "Running"'
    listing += f' AND {search.PHASE.name} != "{Phase.OFFBOARDED}"'
    drifts = await drift_counts(client)
    clusters = []
    async for wf in client.list_workflows(listing):
        attrs = wf.typed_search_attributes
        expiry = attrs.get(search.CERT_EXPIRY)
        name = wf.id.removeprefix("cluster:")
        clusters.append(
            ClusterFacts(
                name=name,
                phase=attrs.get(search.PHASE) or "unknown",
                health=attrs.get(search.HEALTH) or "unknown",
                version=attrs.get(search.VERSION) or "",
                cert_expiry=expiry.timestamp() if expiry else None,
                cert_status=attrs.get(search.CERT_STATUS) or "",
                drifted_fields=drifts.get(name),
            )
        )
    return FleetSnapshot(clusters=clusters, taken_at=time.time())


async def refresh_fleet(client: Client, interval: float, stop: asyncio.Event) -> None:
    """Refreshes the fleet gauges until `stop`; a failed refresh keeps the last snapshot."""
    with contextlib.suppress(ValueError):  # registered already (tests run it twice)
        REGISTRY.register(FLEET)
    while not stop.is_set():
        try:
            FLEET.update(await fleet_snapshot(client))
        except Exception as exc:  # visibility hiccups must not stop the worker
            log.warning("fleet gauges not refreshed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def serve(address: str, routes: list[web.RouteDef]) -> web.AppRunner | None:
    """Serves `routes` on host:port; None (logged) when the address cannot be bound, so
    a busy port never stops the worker."""
    host, port = split_address(address)
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.warning("metrics and probes not served on %s: %s", address, exc)
        await runner.cleanup()
        return None
    log.info("metrics and probes on http://%s/metrics, /livez, /readyz", address)
    return runner
