"""Onboard a large lab fleet and print how long it took and what the worker used.

    .venv/bin/python bench/onboard.py [--clusters 200] [--concurrency 0]

Starts a Temporal dev server, a lab with N clusters and one worker subprocess
(`python worker.py`), onboards every cluster (one Onboard run each, all started at once
unless --concurrency limits them), and prints wall time, clusters/s, the worker's CPU
seconds and its peak RSS (VmHWM on Linux, else sampled with psutil).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fleet import search
from fleet.models import CredentialRef, OnboardRequest, OnboardResult
from lab.testing import LabProcess
from starters.inventory import onboard

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(process: psutil.Process, sampled: int) -> int:
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return sampled


async def run(clusters: int, concurrency: int) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=search.ALL,
        data_converter=pydantic_data_converter,
        ui=False,
    )
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        LabProcess(clusters=clusters, directory=Path(tmp)) as lab,
    ):
        log = Path(tmp) / "worker.log"
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "worker.py"),
            cwd=ROOT,
            env={
                **os.environ,
                "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
                "FLOTILLA_TASK_QUEUE": queue,
                "FLOTILLA_KUBECONFIG": str(lab.kubeconfig),
            },
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        measured = psutil.Process(worker.pid)
        sampled = 0
        requests = [
            OnboardRequest(
                name=c["name"],
                credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=c["context"]),
                labels=c["labels"],
            )
            for c in lab.info["clusters"]
        ]
        gate = asyncio.Semaphore(concurrency or len(requests))

        async def one(req: OnboardRequest) -> OnboardResult:
            async with gate:
                result = await onboard(env.client, req, task_queue=queue)
                assert isinstance(result, OnboardResult)
                return result

        async def sample() -> None:
            nonlocal sampled
            while True:
                sampled = max(sampled, measured.memory_info().rss)
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        cpu_before = measured.cpu_times()
        started = time.perf_counter()
        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        wall = time.perf_counter() - started
        cpu_after = measured.cpu_times()
        sampler.cancel()
        failed = [r for r in results if isinstance(r, BaseException)]
        cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        peak = peak_rss(measured, sampled)
        worker.terminate()
        await worker.wait()
    await env.shutdown()
    print(f"clusters onboarded : {len(results) - len(failed)} of {len(results)}")
    if failed:
        print(f"first failure      : {failed[0]!r}")
    print(f"wall time          : {wall:.1f} s")
    print(f"throughput         : {(len(results) - len(failed)) / wall:.2f} clusters/s")
    print(f"worker CPU         : {cpu:.1f} s (user+system during onboarding)")
    print(f"worker peak RSS    : {peak / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=0, help="0: all at once")
    args = parser.parse_args()
    asyncio.run(run(args.clusters, args.concurrency))


if __name__ == "__main__":
    main()
