"""`flotilla sync plan|start|show` and `flotilla drift list`, and the client-side steps
they share with the Git push webhook.

A sync runs the `SyncPlan` workflow first (Git and credentials live on the worker): it
resolves the ref to a SHA, places the bundles and previews every cluster. Any problem
(a bad file, an unknown kind) refuses the sync before anything starts. Then the rollout
`rollout:sync:<id>` starts on the engine, pinned to that SHA; a prune past the guard makes
it wait for an approval before its first wave (`flotilla ops approve <id>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import getpass
import os
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from fleet import search
from fleet.config import Settings
from fleet.connect import connect
from fleet.durations import parse_duration
from fleet.models import RecordsQuery
from fleet.rollout_models import Outcome, RolloutOptions, RolloutReport, RolloutSpec
from fleet.sync_models import (
    Drift,
    DriftSweepInput,
    DriftSweepResult,
    SyncPreview,
    SyncPreviewInput,
)
from starters import api_client, rollouts
from starters.errors import CliError, failure_message
from starters.inventory import list_clusters
from starters.schedules import put_schedule
from workflows.drift import DriftSweep
from workflows.rollout import Rollout
from workflows.sync_preview import SyncPlan

T = TypeVar("T")
# A preview reads every placed object of every cluster (20,000 at 1,000 clusters with the
# example baseline): longer than a rollout's plan check.
PREVIEW_TIMEOUT = timedelta(minutes=15)
out = Console()
sync_app = typer.Typer(help="Desired state from Git: plan, start and show syncs.")
drift_app = typer.Typer(help="Drift between Git and the clusters (drift sweeps).")


class SyncRefused(CliError):
    """The preview found problems; nothing was started."""


async def preview(
    client: Client,
    repo: str,
    ref: str,
    *,
    started_by: str = "",
    approve_prune: str = "",
    task_queue: str | None = None,
) -> SyncPreview:
    """Runs SyncPlan on the worker; a refused commit raises CliError with its one line."""
    queue = task_queue or Settings.from_env().task_queue
    await rollouts.require_worker(client, queue)
    try:
        return await client.execute_workflow(
            SyncPlan.run,
            SyncPreviewInput(
                repo=repo, ref=ref, started_by=started_by, prune_approved_by=approve_prune
            ),
            id=f"sync-plan:{uuid.uuid4().hex[:10]}",
            task_queue=queue,
            execution_timeout=PREVIEW_TIMEOUT,
            static_summary=f"Sync plan of {ref} in {repo}",
        )
    except WorkflowFailureError as exc:
        raise CliError(failure_message(exc)) from None


def problems(p: SyncPreview) -> list[str]:
    return [f"{d.cluster}: {d.problem}" for d in p.diffs if d.problem]


def asks(p: SyncPreview) -> list[str]:
    """What the run will wait for an approval of (the prune guard), unless pre-approved."""
    return [f"{d.cluster}: {d.approval}" for d in p.diffs if d.approval]


def sync_spec(
    p: SyncPreview, rollout_id: str, options: dict[str, Any] | None = None
) -> RolloutSpec:
    placement = p.placement
    values: dict[str, Any] = {
        "max_concurrent": placement.max_concurrent,
        "failure_budget": placement.failure_budget,
        "soak": placement.soak,
        "approve_between": placement.approve_between,
        "approval_timeout": placement.approval_timeout,
    }
    values.update(options or {})
    return RolloutSpec(
        id=rollout_id,
        selector=placement.selector,
        waves=placement.waves,
        operation=placement.target,
        options=RolloutOptions.model_validate(values),
    )


async def start(
    client: Client,
    p: SyncPreview,
    *,
    rollout_id: str,
    options: dict[str, Any] | None = None,
    task_queue: str | None = None,
) -> WorkflowHandle[Rollout, RolloutReport]:
    """Starts the sync the preview describes; refuses (CliError) if it found problems."""
    if found := problems(p):
        raise SyncRefused(f"sync refused, nothing was changed: {'; '.join(found)}")
    plan = await rollouts.make_plan(client, sync_spec(p, rollout_id, options))
    handle = await rollouts.start_rollout(client, plan, task_queue=task_queue)
    await ensure_drift_schedules(client, p, task_queue=task_queue)
    return handle


def drift_interval() -> float:
    """Seconds between drift sweeps of a bundle (`FLOTILLA_DRIFT_INTERVAL`, default 30s;
    0 disables them)."""
    return parse_duration(os.environ.get("FLOTILLA_DRIFT_INTERVAL", "") or "30s")


async def ensure_drift_schedules(
    client: Client, p: SyncPreview, *, task_queue: str | None = None
) -> None:
    """One schedule per bundle of the synced repository (`flotilla-drift-<bundle>`),
    created or updated to this repository, interval and the clusters the bundle is placed
    on. Idempotent."""
    interval = drift_interval()
    queue = task_queue or Settings.from_env().task_queue
    bundles = sorted({b for d in p.diffs for b in d.bundles})
    repo = p.placement.target.repo
    for bundle in bundles:
        schedule_id = f"flotilla-drift-{bundle}"
        handle = client.get_schedule_handle(schedule_id)
        if interval <= 0:
            with contextlib.suppress(RPCError):
                await handle.delete()
            continue
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                DriftSweep.run,
                DriftSweepInput(
                    bundle=bundle,
                    repo=p.placement.target.repo,
                    selector=p.placement.selector,
                    clusters=[d.cluster for d in p.diffs if bundle in d.bundles],
                ),
                id=f"drift:{bundle}",
                task_queue=queue,
                execution_timeout=timedelta(seconds=max(interval * 4, 600)),
                memo={"bundle": bundle},
                static_summary=f"Drift sweep of bundle {bundle}",
                static_details=f"Compares {bundle} on every cluster with Git ({repo}).",
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=interval))]),
            # A sweep longer than the interval is followed at once by the next (never
            # skipped to the one after): a drift waits at most max(interval, sweep).
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
        )
        await put_schedule(client, schedule_id, schedule)


class RepoNotAllowed(CliError):
    """A push names a repository outside the configured allowlist."""


def check_push_repo(repo: str, allowed: str | None = None) -> None:
    """Refuses (RepoNotAllowed) a pushed repository not listed in `FLOTILLA_GIT_REPOS`
    (comma-separated; exact repositories or fnmatch patterns such as
    `https://git.example.com/platform/*`). A push names what the worker clones, so with
    no list every push is refused."""
    text = os.environ.get("FLOTILLA_GIT_REPOS", "") if allowed is None else allowed
    patterns = [p.strip().rstrip("/") for p in text.split(",") if p.strip()]
    if not patterns:
        raise RepoNotAllowed("no repository may be synced by a push: set FLOTILLA_GIT_REPOS")
    name = repo.rstrip("/")
    if ".." in name.replace("\\", "/").split("/") or any(c.isspace() for c in name):
        raise RepoNotAllowed(f"repository {repo[:200]!r} is not a plain path or URL")
    if not any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns):
        raise RepoNotAllowed(f"repository {repo[:200]!r} is not in FLOTILLA_GIT_REPOS")


async def start_for_sha(
    client: Client, repo: str, sha: str, *, started_by: str, task_queue: str | None = None
) -> tuple[str, bool]:
    """The push webhook's start: one sync per SHA (`rollout:sync:<sha12>`), however often
    the push is delivered. Returns the workflow id and whether this call started it."""
    rollout_id = sha[:12]
    workflow_id = f"rollout:sync:{rollout_id}"
    try:
        await client.get_workflow_handle(workflow_id).describe()
        return workflow_id, False
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    p = await preview(client, repo, sha, started_by=started_by, task_queue=task_queue)
    try:
        handle = await start(client, p, rollout_id=rollout_id, task_queue=task_queue)
    except CliError as exc:
        if "already running" in exc.message:
            return workflow_id, False
        raise
    return handle.id, True


def _run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def print_preview(p: SyncPreview) -> None:
    target = p.placement.target
    table = Table(title=f"{target.describe()}: {len(p.diffs)} clusters")
    for column in ("cluster", "from", "bundles", "create", "change", "delete", "problem"):
        table.add_column(column)
    for d in p.diffs:
        table.add_row(
            d.cluster,
            d.previous_sha[:12] or "-",
            ",".join(d.bundles),
            str(d.count("create")),
            str(d.count("change")),
            str(d.count("delete")),
            d.problem
            or (f"asks approval: {d.approval}" if d.approval else "")
            or (f"unreachable: {d.unreachable}" if d.unreachable else ""),
        )
    out.print(table)
    for d in p.diffs:
        for c in d.changes:
            if c.action != "create":
                paths = f" ({', '.join(c.paths)})" if c.paths else ""
                out.print(f"  {d.cluster}: {c.action} {c.key}{paths}")
    for change in p.changes:
        out.print(
            f"placement {change.bundle}: +{len(change.added)} -{len(change.removed)} clusters"
            f"{' +' + ','.join(change.added) if change.added else ''}"
            f"{' -' + ','.join(change.removed) if change.removed else ''}"
        )


Repo = Annotated[str, typer.Option(help="Git repository: local path or URL.")]
Ref = Annotated[str, typer.Option(help="Branch, tag or commit SHA.")]
Approve = Annotated[
    str,
    typer.Option(
        help="Approve a prune past the repository's threshold now (who approves); without "
        "it the sync waits for `flotilla ops approve` before its first wave."
    ),
]


@sync_app.command("plan")
def plan_command(repo: Repo, ref: Ref = "HEAD", approve_prune: Approve = "") -> None:
    """Preview a sync: placement, and per cluster what would be created/changed/deleted."""

    async def go() -> SyncPreview:
        return await preview(await connect(), repo, ref, approve_prune=approve_prune)

    p = _run(go())
    print_preview(p)
    if found := problems(p):
        raise SyncRefused(f"sync would be refused: {'; '.join(found)}")
    if found := asks(p):
        out.print(f"a sync would wait for an approval before its first wave: {'; '.join(found)}")


@sync_app.command("start")
def start_command(
    repo: Repo,
    ref: Ref = "HEAD",
    approve_prune: Approve = "",
    rollout_id: Annotated[str, typer.Option("--id", help="Rollout id (default: sha-time).")] = "",
    wait: Annotated[bool, typer.Option(help="Wait for the run and print its report.")] = False,
) -> None:
    """Start a sync of the commit `ref` names, through the repository's waves."""

    async def go() -> None:
        client = await connect()
        p = await preview(
            client, repo, ref, started_by=getpass.getuser(), approve_prune=approve_prune
        )
        sha = p.placement.target.sha
        rid = rollout_id or f"{sha[:12]}-{datetime.now(UTC):%H%M%S}"
        handle = await start(client, p, rollout_id=rid)
        print_preview(p)
        out.print(f"started {handle.id}; follow it with `flotilla ops watch {handle.id}`")
        if found := asks(p):
            out.print(
                f"it waits for an approval before its first wave ({'; '.join(found)}): "
                f"`flotilla ops approve {handle.id}`"
            )
        if wait:
            report = await handle.result()
            print_show(report)
            if report.outcome != Outcome.SUCCEEDED:
                raise CliError(f"{report.id} {report.outcome.value}: {report.halt_reason}")

    _run(go())


def print_show(report: RolloutReport) -> None:
    table = Table(title=f"{report.id}: {report.outcome.value} ({report.target})")
    for column in ("cluster", "wave", "status", "from", "to", "diff"):
        table.add_column(column)
    for o in report.outcomes:
        table.add_row(o.name, o.wave, o.status.value, o.from_version, o.to_version, o.reason)
    out.print(table)
    if report.halt_reason:
        out.print(report.halt_reason)


@sync_app.command("show")
def show_command(
    rollout: Annotated[str, typer.Argument(help="Sync id: rollout:sync:<id> or <id>.")],
) -> None:
    """A sync's commit, who started it, and each cluster's diff (+created ~changed -deleted)."""

    async def go() -> None:
        workflow_id = rollout if rollout.startswith("rollout:") else f"rollout:sync:{rollout}"
        if api_client.configured():  # through the API: waits for the report the same way
            api = api_client.ApiClient.from_env()
            while True:
                op = await api.call("GET", f"/v1/operations/{workflow_id}")
                if op["result"] is not None:
                    break
                await asyncio.sleep(2)
            print_show(RolloutReport.model_validate(op["result"]))
            return
        client = await connect()
        handle = client.get_workflow_handle_for(Rollout.run, workflow_id)
        print_show(await handle.result())

    _run(go())


async def latest_drifts(
    client: Client, bundle: str = "", scan: int = 500
) -> list[DriftSweepResult]:
    """Per bundle (or `bundle` alone), the newest finished sweep, with the clusters a
    running sweep has checked since replaced by what it found (so a drift shows as soon as
    its cluster is checked). Looks at the newest `scan` sweeps."""
    finished: dict[str, DriftSweepResult] = {}
    running: dict[str, DriftSweepResult] = {}
    query = f'{search.KIND.name} = "drift"'
    async for wf in client.list_workflows(query, limit=scan):
        name = str((await wf.memo()).get("bundle", ""))
        if not name or name in finished or (bundle and name != bundle):
            continue
        handle = client.get_workflow_handle_for(DriftSweep.run, wf.id, run_id=wf.run_id)
        if wf.status == WorkflowExecutionStatus.RUNNING:
            if name not in running:
                with contextlib.suppress(RPCError, WorkflowQueryFailedError):
                    running[name] = await handle.query(DriftSweep.progress)
        elif wf.status == WorkflowExecutionStatus.COMPLETED:
            finished[name] = await handle.result()
    merged = []
    for name in sorted(set(finished) | set(running)):
        base = finished.get(name) or DriftSweepResult(bundle=name)
        if (now := running.get(name)) is not None:
            fresh = set(now.checked_clusters)
            base = base.model_copy(
                update={
                    "drifts": sorted(
                        [d for d in base.drifts if d.cluster not in fresh] + now.drifts,
                        key=lambda d: (d.cluster, d.key, d.path),
                    )
                }
            )
        merged.append(base)
    return merged


async def drifts(client: Client, *, selector: str = "", bundle: str = "") -> list[Drift]:
    sweeps = await latest_drifts(client, bundle)
    found = [d for s in sweeps for d in s.drifts]
    if selector:
        names = {r.name for r in await list_clusters(client, RecordsQuery(selector=selector))}
        found = [d for d in found if d.cluster in names]
    return found


@drift_app.command("list")
def drift_list(
    selector: Annotated[str, typer.Option("--selector", "-l", help="Clusters.")] = "",
    bundle: Annotated[str, typer.Option(help="Only this bundle.")] = "",
) -> None:
    """Every field that differs from Git, from the latest drift sweep of each bundle."""

    async def go() -> list[Drift]:
        return await drifts(await connect(), selector=selector, bundle=bundle)

    found = _run(go())
    table = Table(title=f"{len(found)} drifted fields")
    for column in ("cluster", "bundle", "object", "path", "git", "live", "manager", "mode"):
        table.add_column(column)
    table.add_column("first seen")
    table.add_column("state")
    for d in found:
        state = f"conflict with {d.conflict}" if d.conflict else "corrected" if d.corrected else ""
        table.add_row(
            d.cluster,
            d.bundle,
            d.key,
            d.path,
            d.desired,
            d.live,
            d.manager,
            d.mode,
            f"{d.first_seen:%F %T}",
            state,
        )
    out.print(table)
