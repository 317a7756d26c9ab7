"""Certificate scan time at fleet sizes, and a CA rotation across a fleet under a probe.

    .venv/bin/python bench/certs.py [--scan 200,1000] [--rotate 200] [--max-concurrent 50]
        [--profile DIR]

Starts a Temporal dev server, a lab with the largest size's clusters and one worker
subprocess; onboards the fleet in steps and, at each `--scan` size, times one `CertScan`
of every onboarded cluster (target: 1,000 in < 30 s). Then rotates the CA of the first
`--rotate` clusters in its three phases (waves 10%,rest, `--max-concurrent` at a time),
while a probe re-reads the hub kubeconfig and makes a verified TLS handshake to every one
of them in a loop: prints each phase's wall time and the probe's handshakes and failures
(target: 0 failures). With `--profile DIR`, py-spy samples the worker and the lab during
each scan (the server's CPU is printed) in DIR/scan-<size>/<process>.txt (collapsed
stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from harness import (
    DevServer,
    cpu_seconds,
    dev_server,
    load_average,
    measured,
    profiled,
    spawn_worker,
    stop_worker,
)

from activities.certs import handshake
from fleet import certs_kubeconfig
from fleet.certs import CertScanRequest
from fleet.certs_models import CertStatus
from fleet.certs_targets import CaRotateTarget, RotationPhase
from fleet.models import CredentialRef, ManagementRef, OnboardRequest
from fleet.rollout_models import Outcome, RolloutOptions, RolloutSpec
from lab.testing import LabProcess
from starters import rollouts
from starters.inventory import onboard
from workflows.certs import CertScan


class Probe(threading.Thread):
    """Verified handshakes to every cluster through the hub kubeconfig, in a loop."""

    def __init__(self, kubeconfig: Path, names: list[str]):
        super().__init__(daemon=True)
        self.kubeconfig, self.names = str(kubeconfig), names
        self.checks = 0
        self.failures: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for name in self.names:
                if self.stopped.is_set():
                    return
                self.checks += 1
                try:
                    view = certs_kubeconfig.view(self.kubeconfig, f"lab-{name}")
                    shake = handshake(view.server, view.ca_pem)
                    if not shake.verified:
                        self.failures.append(f"{name}: {shake.error}")
                except Exception as exc:
                    self.failures.append(f"{name}: {exc}")


async def onboard_range(
    env: DevServer, lab: LabProcess, queue: str, clusters: list[dict[str, Any]]
) -> float:
    mgmt = CredentialRef(kubeconfig=str(lab.kubeconfig), context=lab.info["management_context"])
    gate = asyncio.Semaphore(50)

    async def one(c: dict[str, Any]) -> None:
        request = OnboardRequest(
            name=c["name"],
            credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=c["context"]),
            labels={**c["labels"], "batch": c["batch"]},
            management=ManagementRef(credential=mgmt, namespace="fleet", cluster=c["name"]),
        )
        async with gate:
            await onboard(env.client, request, task_queue=queue)

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in clusters))
    return time.perf_counter() - started


async def scan(env: DevServer, queue: str, expected: int) -> tuple[float, str, str]:
    """One CertScan of the fleet: wall seconds, what it found, where its time went."""
    await asyncio.sleep(2)  # visibility catches up with the last onboardings
    started = time.perf_counter()
    handle = await env.client.start_workflow(
        CertScan.run,
        CertScanRequest(),
        id=f"certscan:bench-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    result = await handle.result()
    wall = time.perf_counter() - started
    counts = ", ".join(f"{result.count(s)} {s.value}" for s in CertStatus if result.count(s))
    note = f"{len(result.clusters)}/{expected} scanned ({counts}); {len(result.failed)} failed"
    return wall, note, await timeline(handle)


async def timeline(handle: Any) -> str:
    """From the run's history: events, seconds until the first scan activity started,
    and the scan activities' durations (mean, max) and span."""
    history = await handle.fetch_history()
    events = history.events
    at = {e.event_id: e.event_time.ToDatetime() for e in events}
    kinds = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    starts, runs = [], []
    for e in events:
        if e.HasField("activity_task_completed_event_attributes"):
            attributes = e.activity_task_completed_event_attributes
            if kinds[attributes.scheduled_event_id] == "scan_and_record":
                begun = at[attributes.started_event_id]
                starts.append(begun)
                runs.append((at[e.event_id] - begun).total_seconds())
    if not runs:
        return f"{len(events)} events"
    first = (min(starts) - at[events[0].event_id]).total_seconds()
    span = (at[events[-1].event_id] - min(starts)).total_seconds()
    return (
        f"{len(events)} events; list {first:.1f} s, then {len(runs)} scan activities over "
        f"{span:.1f} s (each {sum(runs) / len(runs):.1f} s mean, {max(runs):.1f} s max)"
    )


async def rotate(
    env: DevServer, queue: str, selector: str, max_concurrent: int
) -> list[tuple[str, float, str]]:
    phases = []
    for phase in (RotationPhase.ADD, RotationPhase.REISSUE, RotationPhase.REMOVE):
        spec = RolloutSpec(
            id=f"bench-{phase.value}-{uuid.uuid4().hex[:6]}",
            selector=selector,
            waves=["10%,rest"],
            operation=CaRotateTarget(phase=phase),
            options=RolloutOptions(max_concurrent=max_concurrent, cluster_timeout=900),
        )
        plan = await rollouts.make_plan(env.client, spec)
        started = time.perf_counter()
        handle = await rollouts.start_rollout(env.client, plan, task_queue=queue)
        report = await handle.result()
        wall = time.perf_counter() - started
        if report.outcome != Outcome.SUCCEEDED:
            problems = [(o.name, o.reason) for o in report.outcomes if o.reason][:3]
            raise SystemExit(f"phase {phase.value}: {report.outcome.value} {problems}")
        phases.append((phase.value, wall, report.outcome.value))
    return phases


async def run(args: argparse.Namespace) -> None:
    print(f"start: {load_average()}", flush=True)
    sizes = sorted(int(s) for s in args.scan.split(","))
    total = max([*sizes, args.rotate])
    env = await dev_server()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    figures: list[tuple[str, str]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LabProcess(clusters=total, directory=Path(tmp), upgrade_seconds=0.2, nodes=1) as lab,
    ):
        worker = await spawn_worker(
            env, queue, kubeconfig=lab.kubeconfig, log=Path(tmp) / "worker.log"
        )
        try:
            clusters = lab.info["clusters"]
            for i, c in enumerate(clusters):
                c["batch"] = "rotate" if i < args.rotate else "rest"
            done = 0
            for size in sizes:
                seconds = await onboard_range(env, lab, queue, clusters[done:size])
                print(f"onboarded {size - done} clusters in {seconds:.1f} s", flush=True)
                done = size
                others = {"lab": lab.info["pid"], "Temporal server": env.pid}
                pids = {"worker": worker.pid, "lab": lab.info["pid"]}  # the server is Go
                folder = args.profile / f"scan-{size}" if args.profile else None
                with profiled(pids, folder):
                    async with measured(worker.pid) as usage:
                        before = {name: cpu_seconds(pid) for name, pid in others.items()}
                        wall, note, where = await scan(env, queue, size)
                        used = {n: cpu_seconds(pid) - before[n] for n, pid in others.items()}
                figures.append((f"scan of {size} clusters", f"{wall:.1f} s ({note})"))
                figures.append(("  its run", where))
                figures.append(("  worker CPU during it", f"{usage.cpu_seconds:.1f} s"))
                for name, seconds in used.items():
                    figures.append((f"  {name} CPU during it", f"{seconds:.1f} s"))
                print(f"scan of {size}: {wall:.1f} s ({load_average()})", flush=True)
            if done < args.rotate:
                await onboard_range(env, lab, queue, clusters[done : args.rotate])
            if not args.rotate:
                return
            names = [c["name"] for c in clusters[: args.rotate]]
            probe = Probe(lab.kubeconfig, names)
            probe.start()
            started = time.perf_counter()
            try:
                phases = await rotate(env, queue, "batch=rotate", args.max_concurrent)
            finally:
                probe.stopped.set()
                probe.join(30)
            rotation = time.perf_counter() - started
            for phase, wall, outcome in phases:
                figures.append((f"rotation phase {phase}", f"{wall:.1f} s ({outcome})"))
            figures.append((f"CA rotation of {args.rotate} clusters", f"{rotation:.1f} s"))
            figures.append(("probe handshakes", str(probe.checks)))
            figures.append(("probe failed handshakes", str(len(probe.failures))))
            if probe.failures:
                figures.append(("first failures", "; ".join(probe.failures[:3])))
        finally:
            await stop_worker(worker)
            await env.shutdown()
            for label, value in figures:
                print(f"{label:<34}: {value}")
            print(f"end: {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scan", default="200,1000", help="fleet sizes to scan, e.g. 200,1000")
    parser.add_argument("--rotate", type=int, default=200, help="clusters to rotate")
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--profile", type=Path, help="write py-spy profiles to this folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
