"""`flotilla demo` (the README's `make demo`): on the running local stack, onboard the lab
fleet in bulk, sweep its health, run the sample fleet operation, scan certificates and renew
the one that expires soon, sync the example baseline from Git through waves, switch a
database application over to its standby cluster (DR), print the inventory and what the
worker's Prometheus metrics counted.

The sample operation is an add-on canary rollout (CoreDNS image, waves canary:1, 50%,
rest) through the rollout engine; `SAMPLE_OPERATION` is the hook to show another one.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from temporalio.client import Client

from activities.dr_observe import start_run
from activities.dr_records import register_policy
from fleet.addon_target import AddonTarget
from fleet.certs import CertScanRequest
from fleet.certs_targets import CertRenewTarget
from fleet.config import Settings
from fleet.dr import DrRequest, OpKind
from fleet.ids import HEALTH_SCHEDULE_ID
from fleet.models import CredentialRef, ManagementRef, RecordsQuery, SweepRequest
from fleet.rollout_models import RolloutSpec
from starters import cli_certs, cli_dr, cli_sync, inventory, ops, render, rollouts
from starters.stack import Stack
from workflows.certs import CertScan
from workflows.health import FleetHealthSweep

DEMO_IMAGE = "registry.k8s.io/coredns/coredns:v1.11.4"
EXAMPLE_REPO = Path(__file__).resolve().parent.parent / "examples" / "baseline-repo"


async def addon_canary_rollout(client: Client, console: Console) -> str:
    """Starts the demo rollout and returns its workflow id."""
    spec = RolloutSpec(
        id=f"demo-{rollouts.new_rollout_id()}",
        waves=["canary:1", "50%", "rest"],
        operation=AddonTarget(name="coredns", image=DEMO_IMAGE),
    )
    plan = await rollouts.make_plan(client, spec)
    waves = " -> ".join(f"{w.name}: {', '.join(c.name for c in w.clusters)}" for w in plan.waves)
    console.print(f"rolling coredns to {DEMO_IMAGE} in waves {waves}", highlight=False)
    handle = await rollouts.start_rollout(client, plan)
    return handle.id


# Starts the demo's fleet operation and returns its workflow id (watched until it ends).
SAMPLE_OPERATION: Callable[[Client, Console], Awaitable[str]] = addon_canary_rollout


async def certificates(stack: Stack, aging: str, console: Console) -> None:
    """Ages `aging`'s API server certificate to 20 days left (the lab's admin API, as if it
    had been issued 11 months ago), scans the fleet, then renews what is due through the
    engine (a Cluster API control-plane rollout on that cluster only)."""
    assert stack.client is not None
    body = json.dumps({"expiresInDays": 20}).encode()
    url = f"{stack.lab_info['admin_url']}/clusters/{aging}/certificates"
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).close())
    scan = await stack.client.execute_workflow(
        CertScan.run,
        CertScanRequest(),
        id=f"certscan:demo-{uuid.uuid4().hex[:6]}",
        task_queue=stack.options.task_queue,
        static_summary="Certificate scan (demo)",
    )
    console.print(cli_certs.scan_table(scan))
    spec = RolloutSpec(
        id=f"demo-{rollouts.new_rollout_id()}",
        waves=["canary:1", "rest"],
        operation=CertRenewTarget(),
    )
    handle = await rollouts.start_rollout(
        stack.client, await rollouts.make_plan(stack.client, spec)
    )
    ops.require_success(await ops.watch_operation(stack.client, handle.id, console=console))
    console.print(
        "CA rotation runs the same way, one verified phase per rollout: "
        "flotilla certs rotate start --phase add|reissue|remove",
        highlight=False,
    )


def git_repo(directory: Path) -> Path:
    """A Git repository holding examples/baseline-repo in one commit (a sync pins a SHA)."""
    repo = directory / "baseline-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(EXAMPLE_REPO, repo)
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@flotilla.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "baseline"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    return repo


async def sync_baseline(stack: Stack, console: Console) -> None:
    """Previews the example baseline per cluster, then syncs it through the engine's waves
    (drift sweeps then run on a schedule: `flotilla drift list`)."""
    assert stack.client is not None
    repo = await asyncio.to_thread(git_repo, stack.options.state_dir.resolve())
    preview = await cli_sync.preview(
        stack.client, str(repo), "main", started_by="demo", task_queue=stack.options.task_queue
    )
    cli_sync.print_preview(preview)
    handle = await cli_sync.start(
        stack.client,
        preview,
        rollout_id=f"demo-{rollouts.new_rollout_id()}",
        task_queue=stack.options.task_queue,
    )
    ops.require_success(await ops.watch_operation(stack.client, handle.id, console=console))


async def switchover(stack: Stack, members: list[str], console: Console) -> None:
    """Seeds the `shop` database in the lab on `members` (primary first), registers its DR
    policy and switches it over to the standby, following the run (0 writes lost)."""
    assert stack.client is not None
    lab_dir = stack.options.state_dir / "lab"
    seed = [sys.executable, "-m", "lab", "dr", "--dir", str(lab_dir), "shop", *members]
    await asyncio.to_thread(subprocess.run, seed, check=True, capture_output=True)
    policy = cli_dr.lab_policy(
        "shop",
        members,
        kubeconfig=stack.kubeconfig,
        management_context=stack.lab_info.get("management_context", "lab-mgmt"),
    )
    await register_policy(stack.client, policy, task_queue=stack.options.task_queue)
    console.print(
        f"shop: CloudNativePG primary on {members[0]}, standby on {members[1]}, "
        f"DNS {policy.dns.dns_name}",
        highlight=False,
    )
    workflow_id = f"{OpKind.SWITCHOVER}:shop:demo-{uuid.uuid4().hex[:6]}"
    request = DrRequest(app="shop", who="demo", reason="flotilla demo")
    await start_run(
        stack.client,
        OpKind.SWITCHOVER,
        request,
        workflow_id=workflow_id,
        task_queue=stack.options.task_queue,
    )
    ops.require_success(await ops.watch_operation(stack.client, workflow_id, console=console))


async def run(stack: Stack, *, console: Console, exit_when_done: bool) -> bool:
    """The demo steps on a started stack; True tells `serve` to stop when done."""
    assert stack.client is not None
    client = stack.client
    info = stack.lab_info
    kubeconfig = stack.kubeconfig
    mgmt = info.get("management_context", "lab-mgmt")

    console.rule("1. onboard the lab fleet (bulk)")
    requests = inventory.requests_from_kubeconfig(
        kubeconfig,
        contexts=[c["context"] for c in info["clusters"]],
        strip_prefix="lab-",
        labels={c["name"]: dict(c.get("labels", {})) for c in info["clusters"]},
        management=ManagementRef(
            credential=CredentialRef(kubeconfig=kubeconfig, context=mgmt),
            namespace="fleet",
            cluster="",
        ),
    )
    from starters.cli import onboard_all  # the same code path as `clusters onboard`

    await onboard_all(requests, wait=True, client=client)

    console.rule("2. fleet health sweep")
    sweep = await client.execute_workflow(
        FleetHealthSweep.run,
        SweepRequest(),
        id=f"{HEALTH_SCHEDULE_ID}-demo-{uuid.uuid4().hex[:6]}",
        task_queue=stack.options.task_queue,
        static_summary="Fleet health sweep (demo)",
    )
    console.print(
        f"checked {sweep.checked}: {len(sweep.healthy)} healthy, {len(sweep.degraded)} "
        f"degraded, {len(sweep.unreachable)} unreachable",
        highlight=False,
    )

    console.rule("3. sample fleet operation")
    workflow_id = await SAMPLE_OPERATION(client, console)
    ops.require_success(await ops.watch_operation(client, workflow_id, console=console))

    console.rule("4. certificates: scan the fleet, renew what expires within 30 days")
    await certificates(stack, info["clusters"][0]["name"], console)

    console.rule("5. desired state from Git: sync the example baseline")
    await sync_baseline(stack, console)

    console.rule("6. disaster recovery: a planned switchover")
    members = [c["name"] for c in info["clusters"]][:2]
    await switchover(stack, members, console)

    console.rule("7. the fleet")
    records = await inventory.list_clusters(client, RecordsQuery())
    console.print(render.clusters_table(sorted(records, key=lambda r: r.name)))
    metrics(console)
    console.print(f"Web UI: {stack.ui_url}/workflows", highlight=False)
    console.print(f"Follow up: flotilla ops show {workflow_id}", highlight=False)
    console.print(
        "Fleet overview page: flotilla api serve, then open /overview#token=<an API token> "
        "(docs/operations.md, docs/access.md)",
        highlight=False,
    )
    return exit_when_done


def metrics(console: Console) -> None:
    """The finished operations by kind and outcome, read from the worker's /metrics the way
    Prometheus would scrape it."""
    url = f"http://{Settings.from_env().metrics_address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    except OSError as exc:
        console.print(f"metrics: {url} did not answer ({exc})", highlight=False)
        return
    finished = [
        f"{s.labels['kind']} {s.labels['outcome']}: {int(s.value)}"
        for family in text_string_to_metric_families(text)
        if family.name == "flotilla_operations"
        for s in family.samples
        if s.name == "flotilla_operations_total"
    ]
    console.print(
        f"metrics ({url}): operations finished by kind and outcome: "
        + (", ".join(sorted(finished)) or "none yet"),
        highlight=False,
    )
