"""What the platform benches share: a dev server, the real worker as a subprocess, and a
meter of that worker's CPU seconds and peak memory. Run benches as `python bench/X.py`
(this folder is then on sys.path)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fleet import search

ROOT = Path(__file__).resolve().parents[1]


async def dev_server() -> WorkflowEnvironment:
    """A local Temporal dev server (the venv's `temporal`) with Flotilla's attributes."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=search.ALL,
        data_converter=pydantic_data_converter,
        ui=False,
    )


async def spawn_worker(
    env: WorkflowEnvironment, queue: str, *, kubeconfig: Path, log: Path
) -> asyncio.subprocess.Process:
    """`python worker.py` on `queue`, without a health-sweep schedule (it would add load).

    The worker caches bytecode (next to `log`) as a deployed one does, whatever
    PYTHONDONTWRITEBYTECODE says here: the workflow sandbox imports each workflow module
    again for every new workflow instance, and compiling it every time cost ~15% of the
    worker's CPU in the onboarding bench."""
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "worker.py"),
        cwd=ROOT,
        env={
            **inherited,
            "PYTHONPYCACHEPREFIX": str(log.parent / "pycache"),
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "FLOTILLA_TASK_QUEUE": queue,
            "FLOTILLA_KUBECONFIG": str(kubeconfig),
            "FLOTILLA_HEALTH_INTERVAL": "0",
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@dataclass
class Usage:
    cpu_seconds: float = 0.0  # user + system while measured
    peak_rss: int = 0  # bytes, the process's high-water mark


@asynccontextmanager
async def measured(pid: int) -> AsyncIterator[Usage]:
    """Measures process `pid` over the block; figures are filled in when it exits."""
    process = psutil.Process(pid)
    usage = Usage()
    sampled = 0

    async def sample() -> None:
        nonlocal sampled
        while True:
            sampled = max(sampled, process.memory_info().rss)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    before = process.cpu_times()
    try:
        yield usage
    finally:
        after = process.cpu_times()
        sampler.cancel()
        usage.cpu_seconds = (after.user + after.system) - (before.user + before.system)
        usage.peak_rss = _high_water_mark(pid) or sampled


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def dev_server_pid() -> int:
    """The pid of the `temporal` dev server this process started (see `dev_server`)."""
    for child in psutil.Process().children(recursive=True):
        if child.name() == "temporal":
            return int(child.pid)
    raise RuntimeError("no temporal dev server among this process's children")


def _high_water_mark(pid: int) -> int:
    """VmHWM from /proc (Linux); 0 where unavailable, so the sampled peak is used."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
