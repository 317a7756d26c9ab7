"""Git sync and drift on a large lab fleet, and placement at scale.

    .venv/bin/python bench/sync.py [--clusters 200] [--max-concurrent 50]
        [--waves canary:1,10%,rest] [--samples 10] [--placement-only] [--profile DIR]

1. Placement (pure): 1,000 clusters x 500 bundles with mixed selectors, counts and spread.
2. Starts a Temporal dev server, a lab of N clusters and one worker subprocess, onboards
   the fleet, and syncs examples/baseline-repo (the 20-object baseline to every cluster,
   one web workload) through waves with zero soak: wall time from `sync start` (preview
   included) to the report, fully applied.
3. Drift with the default sweep interval (FLOTILLA_DRIFT_INTERVAL, 30 s): edits a field on
   `--samples` clusters (one inform object, one enforced object, field manager
   kubectl-edit), spaced over a sweep interval, and measures the time from each edit to its
   drift record (`flotilla drift list`'s source) and to its correction. Prints p50/p95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import ROOT, dev_server, measured, spawn_worker

from activities.kube import api_client
from activities.manifests import call
from fleet.bundles import Placement
from fleet.models import CredentialRef, ManagementRef, OnboardRequest
from fleet.placement import PlacedCluster, place
from fleet.rollout_models import ClusterStatus, Outcome
from lab.testing import LabProcess
from starters import cli_sync
from starters.inventory import onboard

QUOTA_C = "/api/v1/namespaces/team-c/resourcequotas/compute"  # inform (per-object override)
QUOTA_A = "/api/v1/namespaces/team-a/resourcequotas/compute"  # enforce


def bench_placement() -> tuple[str, str]:
    rng = random.Random(7)
    regions, envs = ["eu", "us", "ap", "sa"], ["dev", "staging", "prod"]
    clusters = [
        PlacedCluster(
            name=f"c{i:04d}",
            labels={"env": rng.choice(envs), "region": rng.choice(regions), "tier": str(i % 5)},
        )
        for i in range(1000)
    ]
    selectors = ["", "env=prod", "env in (dev,staging)", "region=eu,env!=dev", "tier in (1,2)"]
    bundles = [
        (
            f"b{j:03d}",
            Placement(
                selector=rng.choice(selectors),
                clusters=rng.choice([None, None, 1, 3, 10]),
                spread=rng.choice(["", "region"]),
            ),
        )
        for j in range(500)
    ]
    started = time.perf_counter()
    placed = place(bundles, clusters)
    seconds = time.perf_counter() - started
    copies = sum(len(v) for v in placed.values())
    return "placement 1,000 clusters x 500 bundles", f"{seconds:.2f} s ({copies} copies)"


def git_repo(path: Path, waves: str, max_concurrent: int) -> None:
    shutil.copytree(ROOT / "examples" / "baseline-repo", path)
    wave_list = ", ".join(waves.split(","))
    (path / "flotilla.yaml").write_text(
        f"waves: [{wave_list}]\nmax_concurrent: {max_concurrent}\nprune_threshold: 25\n"
    )
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(
            ["git", "-c", "user.name=bench", "-c", "user.email=b@example.com", *args],
            cwd=path,
            check=True,
        )


async def onboard_fleet(client: Any, lab: LabProcess, queue: str) -> float:
    mgmt = CredentialRef(kubeconfig=str(lab.kubeconfig), context=lab.info["management_context"])
    gate = asyncio.Semaphore(50)

    async def one(c: dict[str, Any]) -> None:
        req = OnboardRequest(
            name=c["name"],
            credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=c["context"]),
            labels=c["labels"],
            management=ManagementRef(credential=mgmt, namespace="fleet", cluster=c["name"]),
        )
        async with gate:
            await onboard(client, req, task_queue=queue)

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in lab.info["clusters"]))
    return time.perf_counter() - started


def edit(lab: LabProcess, cluster: str, path: str, pods: str) -> None:
    api = api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{cluster}"))
    body = {"spec": {"hard": {"pods": pods}}}
    call(
        api,
        "PATCH",
        path,
        body=body,
        content_type="application/merge-patch+json",
        query={"fieldManager": "kubectl-edit"},
    )


def live_pods(lab: LabProcess, cluster: str, path: str) -> str:
    api = api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{cluster}"))
    return str(call(api, "GET", path)["spec"]["hard"]["pods"])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def drift_latency(
    client: Any, lab: LabProcess, clusters: list[str], interval: float
) -> tuple[list[float], list[float]]:
    """Seconds from each edit to its drift record, and to the enforced object's correction."""
    recorded: dict[str, float] = {}
    corrected: dict[str, float] = {}
    edited: dict[str, float] = {}

    async def one(i: int, name: str) -> None:
        await asyncio.sleep(i * interval / len(clusters))
        await asyncio.to_thread(edit, lab, name, QUOTA_C, "55")
        await asyncio.to_thread(edit, lab, name, QUOTA_A, "66")
        edited[name] = time.perf_counter()
        while name not in corrected:
            await asyncio.sleep(1)
            if await asyncio.to_thread(live_pods, lab, name, QUOTA_A) == "20":
                corrected[name] = time.perf_counter() - edited[name]

    async def watch_records() -> None:
        while len(recorded) < len(clusters):
            await asyncio.sleep(1)
            for d in await cli_sync.drifts(client, bundle="baseline"):
                if d.key.endswith("team-c/compute") and d.cluster in edited:
                    recorded.setdefault(d.cluster, time.perf_counter() - edited[d.cluster])

    limit = interval * 10 + 120
    try:
        await asyncio.wait_for(
            asyncio.gather(watch_records(), *(one(i, n) for i, n in enumerate(clusters))),
            timeout=limit,
        )
    except TimeoutError:
        print(
            f"drift: {len(clusters) - len(recorded)} records and "
            f"{len(clusters) - len(corrected)} corrections missing after {limit:.0f} s"
        )
    return list(recorded.values()), list(corrected.values())


async def sweep_durations(client: Any, bundle: str) -> list[float]:
    """Seconds each finished drift sweep of `bundle` took (start to close)."""
    found = []
    query = 'WorkflowType = "DriftSweep" AND ExecutionStatus = "Completed"'
    async for wf in client.list_workflows(query):
        mine = wf.id == f"drift:{bundle}" or wf.id.startswith(f"drift:{bundle}-")
        if mine and wf.close_time and wf.start_time:
            found.append((wf.close_time - wf.start_time).total_seconds())
    return found


async def spy(
    worker_pid: int, lab: LabProcess, folder: Path, phase: str, seconds: int | None
) -> list[asyncio.subprocess.Process]:
    """py-spy on the worker and the lab, for `seconds` or until interrupted (SIGINT)."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    assert lab.process is not None
    duration = ["-d", str(seconds)] if seconds else []
    options = ["-r", "50", "-f", "speedscope", "--nonblocking"]
    return [
        await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            *duration,
            *options,
            "-p",
            str(pid),
            "-o",
            str(folder / f"{phase}-{name}.json"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for name, pid in (("worker", worker_pid), ("lab", lab.process.pid))
    ]


async def profile(worker_pid: int, lab: LabProcess, folder: Path) -> None:
    """60 s of py-spy on the worker and the lab while drift sweeps run (no edits)."""
    for process in await spy(worker_pid, lab, folder, "drift", 60):
        await process.wait()
    print(f"profiles in {folder}", flush=True)


async def run(args: argparse.Namespace) -> None:
    figures: list[tuple[str, Any]] = [bench_placement()]
    if args.placement_only:
        for label, value in figures:
            print(f"{label:<40}: {value}")
        return
    env = await dev_server()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    interval = cli_sync.drift_interval()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LabProcess(clusters=args.clusters, directory=Path(tmp), nodes=1) as lab,
    ):
        os.environ["FLOTILLA_KUBECONFIG"] = str(lab.kubeconfig)
        worker = await spawn_worker(env, queue, kubeconfig=lab.kubeconfig, log=Path(tmp) / "w.log")
        try:
            seconds = await onboard_fleet(env.client, lab, queue)
            print(f"onboarded {args.clusters} clusters in {seconds:.1f} s", flush=True)
            repo = Path(tmp) / "repo"
            git_repo(repo, args.waves, args.max_concurrent)
            load_before = os.getloadavg()
            folder = Path(args.profile)
            spies = await spy(worker.pid, lab, folder, "sync", None) if args.profile else []
            async with measured(worker.pid) as usage:
                started = time.perf_counter()
                preview = await cli_sync.preview(env.client, str(repo), "main", task_queue=queue)
                planned = time.perf_counter() - started
                handle = await cli_sync.start(
                    env.client, preview, rollout_id="bench", task_queue=queue
                )
                report = await handle.result()
                wall = time.perf_counter() - started
            for process in spies:
                process.send_signal(signal.SIGINT)
                await process.wait()
            applied = report.count(ClusterStatus.SUCCEEDED)
            if report.outcome != Outcome.SUCCEEDED:
                raise SystemExit(f"sync {report.outcome.value}: {report.halt_reason}")
            objects = sum(d.count("create") for d in preview.diffs)
            figures += [
                ("load average before / after sync", f"{load_before} / {os.getloadavg()}"),
                ("clusters / objects created", f"{args.clusters} / {objects}"),
                ("waves / max concurrent", f"{args.waves} / {args.max_concurrent}"),
                ("preview (SyncPlan) wall time", f"{planned:.1f} s"),
                ("sync wall time to fully applied", f"{wall:.1f} s ({applied} clusters)"),
                (
                    "worker CPU / peak RSS during sync",
                    f"{usage.cpu_seconds:.0f} s / {usage.peak_rss / 2**20:.0f} MiB",
                ),
            ]
            for label, value in figures:
                print(f"{label:<40}: {value}", flush=True)
            if args.profile:
                await profile(worker.pid, lab, Path(args.profile))
            sample = random.Random(3).sample(preview.placement.clusters, args.samples)
            records, corrections = await drift_latency(env.client, lab, sample, interval)
            records, corrections = records or [float("nan")], corrections or [float("nan")]
            figures += [
                ("drift sweep interval", f"{interval:.0f} s"),
                (
                    "edit -> drift record (p50 / p95)",
                    f"{statistics.median(records):.1f} / {pct(records, 0.95):.1f} s",
                ),
                (
                    "edit -> correction, enforce (p50 / p95)",
                    f"{statistics.median(corrections):.1f} / {pct(corrections, 0.95):.1f} s",
                ),
            ]
            durations = await sweep_durations(env.client, "baseline")
            if durations:
                figures.append(
                    (
                        "baseline sweep duration (p50 / max)",
                        f"{statistics.median(durations):.1f} / {max(durations):.1f} s"
                        f" ({len(durations)} sweeps)",
                    )
                )
        finally:
            worker.terminate()
            await worker.wait()
    await env.shutdown()
    for label, value in figures:
        print(f"{label:<40}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--waves", default="canary:1,10%,rest")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--placement-only", action="store_true")
    parser.add_argument(
        "--profile", default="", help="Folder for py-spy profiles of the sync and of sweeps."
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
