"""Disaster-recovery figures on the lab, measured by the lab's workload client.

    .venv/bin/python bench/failover.py [--runs 20] [--ttl 1] [--interval 2] [--rounds 3]

Starts a Temporal dev server, a two-cluster lab with one DR application (primary on the
first cluster), and one worker subprocess, onboards the fleet and registers the app with
automatic failover (default watch settings unless given). Then, with the workload client
writing through the app's DNS name all along:

1. `--runs` planned switchovers (alternating direction): Flotilla's orchestration RTO
   (fence to the first verified write on the new primary) and the writes the client lost;
2. `--runs` automatic failovers: the primary goes dark, the watch fails over by itself;
   the client's outage (its last acknowledged write on the old primary to its first on
   the new one, through DNS with TTL caching), the writes it lost (RPO), then the dark
   cluster returns, is fenced, and a failback brings the app home for the next run;
3. dual-primary moments over the whole bench (rounds where the client's probe found two
   databases taking writes).

Prints min/median/p95/max per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import ROOT, dev_server, spawn_worker

sys.path.insert(0, str(ROOT))

from activities.dr_observe import start_run  # noqa: E402
from activities.dr_records import get_app, register_policy  # noqa: E402
from fleet.dr import DrRequest, DrResult, OpKind, WatchSettings  # noqa: E402
from fleet.models import CredentialRef, OnboardRequest  # noqa: E402
from lab.testing import LabProcess  # noqa: E402
from starters.cli_dr import lab_policy, start_watch  # noqa: E402
from starters.inventory import onboard_many  # noqa: E402

A, B = "eu-prod-1", "us-prod-1"


def figures(name: str, values: list[float], unit: str) -> str:
    if not values:
        return f"{name}: no samples"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{name} ({len(values)} runs): min {ordered[0]:.2f}{unit}, median "
        f"{statistics.median(ordered):.2f}{unit}, p95 {p95:.2f}{unit}, max {ordered[-1]:.2f}{unit}"
    )


async def run(env: Any, queue: str, kind: OpKind, app: str, tag: str) -> DrResult:
    workflow_id = f"{kind}:{app}:{tag}"
    await start_run(env.client, kind, DrRequest(app=app), workflow_id=workflow_id, task_queue=queue)
    handle = env.client.get_workflow_handle(workflow_id, result_type=DrResult)
    result: DrResult = await handle.result()
    if result.progress.outcome != "succeeded":
        raise SystemExit(f"{workflow_id}: {result.progress.outcome}: {result.progress.reason}")
    return result


async def wait_primary(env: Any, app: str, cluster: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        state = await get_app(env.client, app)
        if state and state.primary == cluster and state.operation is None:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{app} did not fail over to {cluster} within {within:.0f}s")


async def wait_fenced(lab: LabProcess, app: str, member: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = next(m for m in lab.admin.dr_app(app)["members"] if m["member"] == member)
        if found["fenced"] and not found["writable"]:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{member} was not fenced within {within:.0f}s")


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    # Every run here is automatic: lift the fleet-wide budget (default 2 per hour).
    os.environ["FLOTILLA_DR_MAX_AUTOMATIC"] = str(10 * args.runs)
    env = await dev_server()
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    with LabProcess(clusters=6, directory=workdir / "lab") as lab:
        worker = await spawn_worker(env, queue, kubeconfig=lab.kubeconfig, log=workdir / "w.log")
        try:
            requests = [
                OnboardRequest(
                    name=c["name"],
                    credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=c["context"]),
                    labels=dict(c["labels"]),
                )
                for c in lab.info["clusters"]
                if c["name"] in (A, B)
            ]
            for onboarded in await onboard_many(env.client, requests, task_queue=queue):
                if isinstance(onboarded, BaseException):
                    raise onboarded
            app = "bench"
            lab.admin.seed_dr_app(app, [A, B], ttl=args.ttl)
            watch = WatchSettings(interval_seconds=args.interval, failure_rounds=args.rounds)
            policy = lab_policy(
                app,
                [A, B],
                kubeconfig=str(lab.kubeconfig),
                management_context=lab.info["management_context"],
                ttl=args.ttl,
                automatic=True,
                watch=watch,
            )
            policy.watch.cooldown_seconds = 0
            await register_policy(env.client, policy, task_queue=queue)
            await start_watch(env.client, app, task_queue=queue)
            dual = 0
            planned_rto: list[float] = []
            planned_lost: list[float] = []
            for i in range(args.runs):
                client = lab.admin.start_workload(app)
                await asyncio.sleep(0.5)
                result = await run(env, queue, OpKind.SWITCHOVER, app, f"s{i}")
                await asyncio.sleep(args.ttl + 1.0)
                measured = lab.admin.stop_workload(client)
                planned_rto.append(result.progress.measurements[0].rto_seconds or 0.0)
                planned_lost.append(measured["lostCount"])
                dual += measured["dualPrimaryProbes"]
                print(
                    f"switchover {i + 1}: RTO {planned_rto[-1]:.2f}s, lost {measured['lostCount']}",
                    flush=True,
                )
            home = (await get_app(env.client, app)).primary  # type: ignore[union-attr]
            other = B if home == A else A
            outage: list[float] = []
            lost: list[float] = []
            for i in range(args.runs):
                client = lab.admin.start_workload(app)
                await asyncio.sleep(1.0)
                lab.admin.fault(home, "dark", mode="refuse")
                try:
                    await wait_primary(env, app, other)
                    deadline = time.monotonic() + 60
                    while lab.admin.workload(client)["ackedBy"].get(other, 0) == 0:
                        if time.monotonic() > deadline:
                            raise SystemExit("no write reached the new primary")
                        await asyncio.sleep(0.05)
                finally:
                    lab.admin.clear(home, "dark")
                await wait_fenced(lab, app, home)
                measured = lab.admin.stop_workload(client)
                outage.append(measured["rtoSeconds"])
                lost.append(measured["lostCount"])
                dual += measured["dualPrimaryProbes"]
                print(
                    f"automatic failover {i + 1}: outage {outage[-1]:.2f}s, "
                    f"lost {measured['lostCount']} writes, dual-primary probes "
                    f"{measured['dualPrimaryProbes']}",
                    flush=True,
                )
                await asyncio.sleep(args.interval * 2)  # the watch clears the pending fence
                await run(env, queue, OpKind.FAILBACK, app, f"b{i}")
            print()
            print(figures("planned switchover RTO (orchestration)", planned_rto, "s"))
            print(figures("planned switchover writes lost", planned_lost, ""))
            print(
                figures("automatic failover, dark to first write on the new primary", outage, "s")
            )
            print(figures("automatic failover RPO (writes lost)", lost, ""))
            print(f"dual-primary probe rounds over the bench: {dual}")
        finally:
            worker.terminate()
            await worker.wait()
            await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--ttl", type=int, default=5, help="DNS TTL of the app record (the lab default)"
    )
    parser.add_argument("--interval", type=float, default=WatchSettings().interval_seconds)
    parser.add_argument("--rounds", type=int, default=WatchSettings().failure_rounds)
    asyncio.run(main(parser.parse_args()))
