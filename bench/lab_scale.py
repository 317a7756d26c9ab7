"""How the lab behaves at fleet scale: start time, memory, and API latency under load.

Starts a lab with N clusters (default 500) in a child process, then drives a bounded
number of concurrent GETs and LISTs over HTTPS (loopback, lab CA) and prints the figures.
Stops by itself.

    .venv/bin/python bench/lab_scale.py [--clusters 500] [--requests 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

KINDS = {
    "get": "/api/v1/namespaces/default",
    "list": "/api/v1/namespaces/kube-system/pods",
}


async def serve(directory: Path, clusters: int) -> None:
    """Child: start the lab, report the start time, serve until SIGTERM."""
    from lab.runtime import Lab

    lab = Lab(directory=directory, clusters=clusters)
    started = time.perf_counter()
    await lab.start()
    elapsed = time.perf_counter() - started
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    (directory / "bench.json").write_text(json.dumps({"start_seconds": elapsed}))
    await stop.wait()
    await lab.stop()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    config: dict[str, Any], *, requests: int, concurrency: int, warm: bool
) -> dict[str, list[float]]:
    """Runs `requests` GETs and LISTs each from `concurrency` workers; latencies per kind.

    Cold: every request goes to a random cluster, so most open a new TLS connection (as a
    fleet-wide sweep does). Warm: each worker sticks to one cluster over keep-alive.
    """
    servers = {c["name"]: c["cluster"]["server"] for c in config["clusters"]}
    tokens = {u["name"]: u["user"]["token"] for u in config["users"]}
    # Each cluster has its own CA: one client context trusts them all (as before, one).
    cas = {c["cluster"]["certificate-authority-data"] for c in config["clusters"]}
    context = ssl.create_default_context(
        cadata="".join(base64.b64decode(ca).decode() for ca in cas)
    )
    names = sorted(servers)
    latencies: dict[str, list[float]] = {k: [] for k in KINDS}
    rng = random.Random(0)
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for _ in range(requests):
        for kind in KINDS:
            queue.put_nowait((rng.choice(names), kind))
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(n: int) -> None:
            while not queue.empty():
                name, kind = queue.get_nowait()
                if warm:
                    name = names[n % len(names)]
                headers = {"Authorization": f"Bearer {tokens[name]}"}
                began = time.perf_counter()
                async with session.get(servers[name] + KINDS[kind], headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{name}: {KINDS[kind]} answered {resp.status}")
                latencies[kind].append(time.perf_counter() - began)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--requests", type=int, default=2000, help="per kind (get, list)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.clusters))
        return

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(directory), "--clusters", str(args.clusters)]
        )
        try:
            report = directory / "bench.json"
            while not report.exists():
                if child.poll() is not None:
                    sys.exit(f"lab exited early with code {child.returncode}")
                time.sleep(0.2)
            start_seconds = json.loads(report.read_text())["start_seconds"]
            rss_idle = psutil.Process(child.pid).memory_info().rss
            config = yaml.safe_load((directory / "kubeconfig").read_text())
            phases: dict[str, tuple[float, dict[str, list[float]]]] = {}
            for phase in ("cold", "warm"):
                began = time.perf_counter()
                latencies = asyncio.run(
                    load(
                        config,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        warm=phase == "warm",
                    )
                )
                phases[phase] = (time.perf_counter() - began, latencies)
            rss_loaded = psutil.Process(child.pid).memory_info().rss
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(60)

    print(f"clusters            {args.clusters} (+ mgmt)")
    print(f"start time          {start_seconds:.2f} s")
    print(f"RSS idle / loaded   {rss_idle / 2**20:.0f} MiB / {rss_loaded / 2**20:.0f} MiB")
    for phase, (wall, latencies) in phases.items():
        total = sum(len(v) for v in latencies.values())
        print(
            f"{phase} load           {total} requests, concurrency {args.concurrency}, "
            f"{total / wall:.0f} req/s"
        )
        for kind, samples in latencies.items():
            print(
                f"  {kind:<17} p50 {percentile(samples, 0.5) * 1000:.1f} ms   "
                f"p99 {percentile(samples, 0.99) * 1000:.1f} ms"
            )


if __name__ == "__main__":
    main()
