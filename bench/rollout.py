"""Upgrade a large lab fleet with the rollout engine and compare with a straight script.

    .venv/bin/python bench/rollout.py [--clusters 200] [--waves 10%,20%,30%,rest]
        [--max-concurrent 50] [--upgrade-seconds 0.2] [--nodes 2] [--no-health-gates]
        [--workers 1] [--profile DIR]

Starts a Temporal dev server, a lab with N clusters and `--workers` worker subprocesses on
one task queue, onboards the fleet, then:
1. the engine: one `Rollout` (Kubernetes v1.30.6 -> v1.31.2) in the given waves, zero
   soak, `--max-concurrent` clusters at a time per wave;
2. the critical-path lower bound: the same per-cluster work (the same activity functions,
   run through the SDK's ActivityEnvironment: health gate, Cluster API set/wait for control
   plane and workers, version check, health gate, then the per-wave health check) by a
   plain thread pool of the same size, wave after wave, v1.31.2 -> v1.32.0, no Temporal.
Prints the load average at start and end (a busy machine stretches every figure), both
wall times, their ratio, the parent's history length per run (continue-as-new between
waves), the workers' CPU seconds and peak RSS during the rollout, the dev server's
payload-size warnings (above 512 KB), and with several workers how many children each ran
(from the children's histories) and that every cluster was changed exactly once. With
`--profile DIR`, py-spy samples the worker(s), the lab and the server during the rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import (
    DevServer,
    dev_server,
    load_average,
    measured,
    profiled,
    spawn_worker,
    stop_worker,
)
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities import capi, health
from fleet.k8s_target import K8sTarget
from fleet.models import (
    ClusterRecord,
    ClusterRef,
    CredentialRef,
    Health,
    ManagementRef,
    OnboardRequest,
    RecordsQuery,
)
from fleet.rollout_models import (
    CapiRequest,
    ClusterStatus,
    Outcome,
    Plan,
    RolloutOptions,
    RolloutSpec,
    VersionCheck,
)
from lab.testing import LabProcess
from starters import rollouts
from starters.inventory import list_clusters, onboard
from workflows.cluster_task import SETTLE_POLL

# The rollout's default after-change settle period (RolloutOptions.settle).
AFTER_SETTLE = RolloutOptions().settle

OLD, MID, NEW = "v1.30.6", "v1.31.2", "v1.32.0"


def straight_cluster(cluster: ClusterRecord, version: str, gates: bool) -> float:
    """One cluster's work as K8sUpgrade does it, minus Temporal (lock, facts); seconds."""
    started = time.perf_counter()
    env = ActivityEnvironment()
    assert cluster.management is not None
    request = CapiRequest(
        cluster=cluster.name, management=cluster.management, version=version, timeout_seconds=600
    )
    if gates:
        env.run(health.check_cluster_health, cluster.ref())
    env.run(capi.read_capi_state, request)
    env.run(capi.upgrade_control_plane, request)
    env.run(capi.upgrade_workers, request)
    report = env.run(
        capi.read_cluster_versions, VersionCheck(cluster=cluster.ref(), version=version)
    )
    assert not report.problems, report.problems
    if gates:
        settle(env, cluster.ref())
    return time.perf_counter() - started


def settle(env: ActivityEnvironment, ref: ClusterRef) -> None:
    """The rollout's after-change gate, as a script: re-read until healthy, same bounds."""
    deadline = time.monotonic() + AFTER_SETTLE
    while env.run(health.check_cluster_health, ref).health != Health.HEALTHY:
        assert time.monotonic() < deadline, f"{ref.name} did not settle"
        time.sleep(SETTLE_POLL.total_seconds())


def wave_gate(ref: ClusterRef) -> None:
    ActivityEnvironment().run(health.check_cluster_health, ref)


def straight_script(
    plan: Plan, records: dict[str, ClusterRecord], version: str, concurrency: int, gates: bool
) -> tuple[float, float]:
    """The whole script's seconds and a cluster's mean seconds."""
    started = time.perf_counter()
    each: list[float] = []
    with ThreadPoolExecutor(concurrency) as pool:
        for wave in plan.waves:
            clusters = [records[c.name] for c in wave.clusters]
            each += pool.map(lambda c: straight_cluster(c, version, gates), clusters)
            if gates:
                list(pool.map(wave_gate, [c.ref() for c in clusters]))
    return time.perf_counter() - started, sum(each) / len(each)


async def onboard_fleet(client: Client, lab: LabProcess, queue: str) -> float:
    mgmt = CredentialRef(kubeconfig=str(lab.kubeconfig), context=lab.info["management_context"])
    requests = [
        OnboardRequest(
            name=c["name"],
            credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=c["context"]),
            labels=c["labels"],
            management=ManagementRef(credential=mgmt, namespace="fleet", cluster=c["name"]),
        )
        for c in lab.info["clusters"]
    ]
    gate = asyncio.Semaphore(50)

    async def one(req: OnboardRequest) -> None:
        async with gate:
            await onboard(client, req, task_queue=queue)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    print(f"start: {load_average()}")
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    lab_options = {"upgrade_seconds": args.upgrade_seconds, "nodes": args.nodes}
    with tempfile.TemporaryDirectory() as tmp:
        server = await dev_server(Path(tmp))
        try:
            with LabProcess(clusters=args.clusters, directory=Path(tmp), **lab_options) as lab:
                os.environ["FLOTILLA_KUBECONFIG"] = str(lab.kubeconfig)  # the straight script
                workers = [
                    await spawn_worker(
                        server, queue, kubeconfig=lab.kubeconfig, log=Path(tmp) / f"worker{i}.log"
                    )
                    for i in range(args.workers)
                ]
                try:
                    onboard_seconds = await onboard_fleet(server.client, lab, queue)
                    print(f"onboarded {args.clusters} clusters in {onboard_seconds:.1f} s")
                    pids = {f"worker{i}": w.pid for i, w in enumerate(workers)}
                    pids |= {"lab": lab.info["pid"], "server": server.pid}
                    with profiled(pids, args.profile):
                        figures = await measure(
                            server, queue, [w.pid for w in workers], lab.info["pid"], args
                        )
                finally:
                    for worker in workers:
                        await stop_worker(worker)
        finally:
            await server.shutdown()
    for label, value in figures:
        print(f"{label:<34}: {value}")
    print(f"end: {load_average()}")


async def measure(
    server: DevServer, queue: str, pids: list[int], lab_pid: int, args: argparse.Namespace
) -> list[tuple[str, Any]]:
    client = server.client
    spec = RolloutSpec(
        id=f"bench-{uuid.uuid4().hex[:6]}",
        waves=[args.waves],
        operation=K8sTarget(version=MID),
        options=RolloutOptions(
            max_concurrent=args.max_concurrent,
            health_gates=args.health_gates,
            cluster_timeout=600,
        ),
    )
    plan = await rollouts.make_plan(client, spec)
    async with contextlib.AsyncExitStack() as stack:
        usages = [await stack.enter_async_context(measured(pid)) for pid in pids]
        others = [await stack.enter_async_context(measured(pid)) for pid in (lab_pid, server.pid)]
        started = time.perf_counter()
        handle = await rollouts.start_rollout(client, plan, task_queue=queue)
        report = await handle.result()
        wall = time.perf_counter() - started
    names = plan.cluster_names()
    if report.outcome != Outcome.SUCCEEDED or report.count(ClusterStatus.SUCCEEDED) != len(
        names
    ):  # the lower bound assumes every cluster now runs MID
        problems = [(o.name, o.status.value, o.reason) for o in report.outcomes if o.reason]
        raise SystemExit(
            f"rollout {report.outcome.value}: {report.halt_reason or ''} {problems[:5]}"
        )
    runs = [wf async for wf in client.list_workflows(f'WorkflowId = "{handle.id}"')]
    lengths = sorted(r.history_length for r in runs)
    sizes = [await history_bytes(client, handle.id, r.run_id) for r in runs]
    widest = max(len(w.clusters) for w in plan.waves)
    records = {r.name: r for r in await list_clusters(client, RecordsQuery())}
    straight, per_cluster = await asyncio.to_thread(
        straight_script, plan, records, NEW, args.max_concurrent, args.health_gates
    )
    succeeded = report.count(ClusterStatus.SUCCEEDED)
    cpu = sum(u.cpu_seconds for u in usages)
    figures = [
        ("clusters / waves", f"{len(names)} / {len(plan.waves)} ({args.waves})"),
        ("max concurrent per wave", args.max_concurrent),
        ("rollout status", f"{report.status.value}, {succeeded} succeeded"),
        ("rollout wall time", f"{wall:.1f} s"),
        ("straight script (lower bound)", f"{straight:.1f} s"),
        ("ratio rollout / lower bound", f"{wall / straight:.2f}"),
        ("a cluster in the straight script", f"{per_cluster:.2f} s (mean)"),
        ("parent runs (continue-as-new)", len(runs)),
        ("parent history events per run", f"max {max(lengths)}, total {sum(lengths)}"),
        (
            "parent history bytes per run",
            f"max {max(t for t, _ in sizes) / 1024:.0f} KB "
            f"({max(t for t, _ in sizes) / widest:.0f} B a cluster of the largest wave)",
        ),
        ("largest event in parent histories", f"{max(e for _, e in sizes) / 1024:.0f} KB"),
        ("worker CPU during rollout", f"{cpu:.1f} s ({cpu / len(names):.3f} s a cluster)"),
        ("worker peak RSS", ", ".join(f"{u.peak_rss / 2**20:.0f} MiB" for u in usages)),
        ("lab / server CPU during rollout", " / ".join(f"{u.cpu_seconds:.1f} s" for u in others)),
        ("server payload warnings (>512 KB)", server.blob_warnings()),
    ]
    figures += await children(client, handle.id, names, args.workers)
    return figures


async def history_bytes(client: Client, workflow_id: str, run_id: str | None) -> tuple[int, int]:
    """A run's history size in bytes (protobuf, as the server stores it) and its largest
    event's (a payload's upper bound)."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    sizes = [e.ByteSize() for e in history.events]
    return sum(sizes), max(sizes)


async def children(
    client: Client, rollout_id: str, names: list[str], workers: int
) -> list[tuple[str, Any]]:
    """From every child's history: where a child's time goes (its activities running,
    activities waiting for a worker, the rest: workflow tasks and Temporal's round trips),
    and with several workers which worker ran each child (the identity on its first
    workflow task) and how many times each cluster's control plane was set (1 each: every
    cluster changed once)."""
    gate = asyncio.Semaphore(20)
    by_worker: dict[str, int] = {}
    upgrades: dict[str, int] = {}
    spent = {"total": 0.0, "running": 0.0, "queued": 0.0}

    async def one(name: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(f"{rollout_id}/{name}").fetch_history()
        events = history.events
        identity = next(
            e.workflow_task_started_event_attributes.identity
            for e in events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        )
        by_worker[identity] = by_worker.get(identity, 0) + 1
        at = {e.event_id: e.event_time.ToDatetime() for e in events}
        spent["total"] += (at[events[-1].event_id] - at[events[0].event_id]).total_seconds()
        scheduled = {}
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                kind = e.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[e.event_id] = kind
                upgrades[name] = upgrades.get(name, 0) + (kind == "upgrade_cluster")
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = e.activity_task_started_event_attributes
                spent["queued"] += (at[e.event_id] - at[started.scheduled_event_id]).total_seconds()
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                done = e.activity_task_completed_event_attributes
                spent["running"] += (at[e.event_id] - at[done.started_event_id]).total_seconds()

    await asyncio.gather(*(one(n) for n in names))
    n = len(names)
    total, running, queued = (spent[k] / n for k in ("total", "running", "queued"))
    figures: list[tuple[str, Any]] = [
        (
            "a child's time (mean)",
            f"{total:.2f} s: activities running {running:.2f} s, waiting for a worker "
            f"{queued:.2f} s, other {total - running - queued:.2f} s",
        )
    ]
    if workers > 1:
        once = sum(1 for name in names if upgrades.get(name) == 1)
        figures += [
            ("children per worker", ", ".join(f"{w}: {c}" for w, c in sorted(by_worker.items()))),
            ("clusters changed exactly once", f"{once} of {n}"),
        ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--waves", default="10%,20%,30%,rest")
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--upgrade-seconds", type=float, default=0.2)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--health-gates", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workers", type=int, default=1, help="worker processes, one queue")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles to this folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
