"""Probes of an application from outside Kubernetes: an HTTP request to its endpoint (a
POST is a write the app acknowledges only when its database takes it)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp
from temporalio import activity
from temporalio.exceptions import ApplicationError

from fleet.dr import ProbeRequest, ProbeResult

RETRY_SECONDS = 0.2


async def probe(req: ProbeRequest) -> ProbeResult:
    """One request; never raises (a failure is a result)."""
    timeout = aiohttp.ClientTimeout(total=req.timeout_seconds)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            method = "POST" if req.write else "GET"
            async with session.request(method, req.url, data=b"flotilla-probe") as response:
                ok = 200 <= response.status < 300
                reason = "" if ok else (await response.text())[:200]
                return ProbeResult(ok=ok, status=response.status, reason=reason, at=_now())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return ProbeResult(ok=False, reason=f"{type(exc).__name__}: {exc}"[:200], at=_now())


def _now() -> datetime:
    return datetime.now(UTC)


@activity.defn
async def probe_app(req: ProbeRequest) -> ProbeResult:
    return await probe(req)


@activity.defn
async def wait_writable(req: ProbeRequest) -> ProbeResult:
    """Repeats the probe until it succeeds (heartbeating); fails non-retryably after
    `req.timeout_seconds` with the last answer."""
    deadline = time.monotonic() + req.timeout_seconds
    each = req.model_copy(update={"timeout_seconds": min(req.timeout_seconds, 2.0)})
    while True:
        result = await probe(each)
        if result.ok:
            return result
        activity.heartbeat(f"waiting for a write to succeed at {req.url}: {result.reason}")
        if time.monotonic() >= deadline:
            raise ApplicationError(
                f"no write accepted at {req.url} within {req.timeout_seconds:.0f}s: "
                f"{result.reason or result.status}",
                type="NotWritable",
                non_retryable=True,
            )
        await asyncio.sleep(RETRY_SECONDS)
