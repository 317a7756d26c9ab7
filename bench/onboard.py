"""Onboard a large lab fleet and print how long it took and what the worker used.

    .venv/bin/python bench/onboard.py [--clusters 200] [--concurrency 0]

Starts a Temporal dev server, a lab with N clusters and one worker subprocess
(`python worker.py`), waits until the worker polls (its start is not measured), onboards
every cluster (one Onboard run each, all started at once unless --concurrency limits
them), and prints wall time, clusters/s, the worker's CPU seconds (in all and per
cluster) and its peak RSS (VmHWM on Linux, else sampled with psutil), and for context the
CPU seconds of the lab and the Temporal dev server, which share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from harness import (
    cpu_seconds,
    dev_server,
    load_average,
    measured,
    profiled,
    spawn_worker,
    stop_worker,
    wait_for_pollers,
)

from fleet.models import CredentialRef, OnboardRequest, OnboardResult
from lab.testing import LabProcess
from starters.inventory import onboard


async def run(clusters: int, concurrency: int, profile: Path | None) -> None:
    print(f"start: {load_average()}")
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        LabProcess(clusters=clusters, directory=Path(tmp)) as lab,
    ):
        env = await dev_server(Path(tmp))
        worker = await spawn_worker(
            env, queue, kubeconfig=lab.kubeconfig, log=Path(tmp) / "worker.log"
        )
        await wait_for_pollers(env.client, queue)
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

        others = {"lab": lab.info["pid"], "Temporal server": env.pid}
        profiles = {"worker": worker.pid, "lab": lab.info["pid"], "server": env.pid}
        try:
            with profiled(profiles, profile):
                async with measured(worker.pid) as usage:
                    before = {name: cpu_seconds(pid) for name, pid in others.items()}
                    started = time.perf_counter()
                    results = await asyncio.gather(
                        *(one(r) for r in requests), return_exceptions=True
                    )
                    wall = time.perf_counter() - started
                    used = {name: cpu_seconds(pid) - before[name] for name, pid in others.items()}
        finally:
            await stop_worker(worker)
            await env.shutdown()
    failed = [r for r in results if isinstance(r, BaseException)]
    print(f"clusters onboarded : {len(results) - len(failed)} of {len(results)}")
    if failed:
        print(f"first failure      : {failed[0]!r}")
    print(f"wall time          : {wall:.1f} s")
    print(f"throughput         : {(len(results) - len(failed)) / wall:.2f} clusters/s")
    print(f"worker CPU         : {usage.cpu_seconds:.1f} s (user+system during onboarding)")
    print(f"worker CPU/cluster : {usage.cpu_seconds / len(results) * 1000:.0f} ms")
    print(f"worker peak RSS    : {usage.peak_rss / 2**20:.0f} MiB")
    for name, seconds in used.items():
        print(f"{name + ' CPU':<19}: {seconds:.1f} s")
    print(f"end: {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=0, help="0: all at once")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles to this folder")
    args = parser.parse_args()
    asyncio.run(run(args.clusters, args.concurrency, args.profile))


if __name__ == "__main__":
    main()
