"""Upgrade a large lab fleet with the rollout engine and compare with a straight script.

    .venv/bin/python bench/rollout.py [--clusters 200] [--waves 10%,20%,30%,rest]
        [--max-concurrent 50] [--upgrade-seconds 0.2] [--nodes 2] [--no-health-gates]

Starts a Temporal dev server, a lab with N clusters and one worker subprocess, onboards
the fleet, then:
1. the engine: one `Rollout` (Kubernetes v1.30.6 -> v1.31.2) in the given waves, zero
   soak, `--max-concurrent` clusters at a time per wave;
2. the critical-path lower bound: the same per-cluster work (the same activity functions,
   run through the SDK's ActivityEnvironment: health gate, Cluster API set/wait for control
   plane and workers, version check, health gate, then the per-wave health check) by a
   plain thread pool of the same size, wave after wave, v1.31.2 -> v1.32.0, no Temporal.
Prints both wall times, their ratio, the parent's history length per run (continue-as-new
between waves), and the worker's CPU seconds and peak RSS during the rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import dev_server, measured, spawn_worker
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

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


def straight_cluster(cluster: ClusterRecord, version: str, gates: bool) -> None:
    """One cluster's work as K8sUpgrade does it, minus Temporal (lock, facts)."""
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
) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for wave in plan.waves:
            clusters = [records[c.name] for c in wave.clusters]
            list(pool.map(lambda c: straight_cluster(c, version, gates), clusters))
            if gates:
                list(pool.map(wave_gate, [c.ref() for c in clusters]))
    return time.perf_counter() - started


async def onboard_fleet(env: WorkflowEnvironment, lab: LabProcess, queue: str) -> float:
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
            await onboard(env.client, req, task_queue=queue)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    env = await dev_server()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    lab_options = {"upgrade_seconds": args.upgrade_seconds, "nodes": args.nodes}
    with (
        tempfile.TemporaryDirectory() as tmp,
        LabProcess(clusters=args.clusters, directory=Path(tmp), **lab_options) as lab,
    ):
        os.environ["FLOTILLA_KUBECONFIG"] = str(lab.kubeconfig)  # for the straight script
        worker = await spawn_worker(
            env, queue, kubeconfig=lab.kubeconfig, log=Path(tmp) / "worker.log"
        )
        try:
            onboard_seconds = await onboard_fleet(env, lab, queue)
            print(f"onboarded {args.clusters} clusters in {onboard_seconds:.1f} s")
            figures = await measure(env, queue, worker.pid, args)
        finally:
            worker.terminate()
            await worker.wait()
    await env.shutdown()
    for label, value in figures:
        print(f"{label:<34}: {value}")


async def measure(
    env: WorkflowEnvironment, queue: str, pid: int, args: argparse.Namespace
) -> list[tuple[str, Any]]:
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
    plan = await rollouts.make_plan(env.client, spec)
    async with measured(pid) as usage:
        started = time.perf_counter()
        handle = await rollouts.start_rollout(env.client, plan, task_queue=queue)
        report = await handle.result()
        wall = time.perf_counter() - started
    if report.outcome != Outcome.SUCCEEDED or report.count(ClusterStatus.SUCCEEDED) != len(
        plan.cluster_names()
    ):  # the lower bound assumes every cluster now runs MID
        problems = [(o.name, o.status.value, o.reason) for o in report.outcomes if o.reason]
        raise SystemExit(
            f"rollout {report.outcome.value}: {report.halt_reason or ''} {problems[:5]}"
        )
    runs = [wf async for wf in env.client.list_workflows(f'WorkflowId = "{handle.id}"')]
    lengths = sorted(r.history_length for r in runs)
    records = {r.name: r for r in await list_clusters(env.client, RecordsQuery())}
    straight = await asyncio.to_thread(
        straight_script, plan, records, NEW, args.max_concurrent, args.health_gates
    )
    succeeded = report.count(ClusterStatus.SUCCEEDED)
    return [
        ("clusters / waves", f"{len(plan.cluster_names())} / {len(plan.waves)} ({args.waves})"),
        ("max concurrent per wave", args.max_concurrent),
        ("rollout status", f"{report.status.value}, {succeeded} succeeded"),
        ("rollout wall time", f"{wall:.1f} s"),
        ("straight script (lower bound)", f"{straight:.1f} s"),
        ("ratio rollout / lower bound", f"{wall / straight:.2f}"),
        ("parent runs (continue-as-new)", len(runs)),
        ("parent history events per run", f"max {max(lengths)}, total {sum(lengths)}"),
        ("worker CPU during rollout", f"{usage.cpu_seconds:.1f} s"),
        ("worker peak RSS", f"{usage.peak_rss / 2**20:.0f} MiB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--waves", default="10%,20%,30%,rest")
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--upgrade-seconds", type=float, default=0.2)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--health-gates", action=argparse.BooleanOptionalAction, default=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
