"""`flotilla dr ...`: disaster recovery of applications (docs/dr.md).

    flotilla dr register POLICY.yaml       # create or update an application's DR policy
    flotilla dr list | show APP | status APP
    flotilla dr switchover|failover|failback APP [--to CLUSTER] [--no-wait]
    flotilla dr drill APP [--every 7d]     # now, and/or on a Temporal Schedule
    flotilla dr drills APP                 # drill results
    flotilla dr approve APP                # admit an automatic failover past the budget

Requests are checked against the application's record before anything starts (unknown
application, a cluster outside the policy, an operation already running): one line,
exit 2 for usage, 1 otherwise. A run is followed live like `ops watch`; the exit code is
0 only when it succeeded. Mount with `mount(app)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
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
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.dr_observe import start_run
from activities.dr_records import get_app, list_apps, register_policy
from fleet.config import Settings
from fleet.connect import connect
from fleet.dr import (
    ApproveFailover,
    BeginRequest,
    DnsRecord,
    DrAppState,
    DrMember,
    DrPolicy,
    DrRequest,
    OpKind,
    Role,
    RunRecord,
    WatchSettings,
    WatchState,
    drill_schedule_id,
    watch_id,
)
from fleet.dr_rules import begin_problem, default_target, operation_conflict
from fleet.durations import parse_duration
from fleet.events import ChangeRef
from fleet.models import CredentialRef
from starters import api_client, ops, render
from starters.errors import CliError, failure_message, usage
from starters.schedules import put_schedule
from workflows.dr import RUNS
from workflows.dr_watch import DrWatch

T = TypeVar("T")
out = Console()
dr_app = typer.Typer(help="Disaster recovery: failover, switchover, failback, drills.")


def mount(app: typer.Typer) -> None:
    app.add_typer(dr_app, name="dr", no_args_is_help=True)


def _run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def _queue() -> str:
    return Settings.from_env().task_queue


# ---------------------------------------------------------------- policy


def load_policy(path: Path) -> DrPolicy:
    """A DrPolicy from YAML or JSON; every problem is a usage error naming the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise usage(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    try:
        return DrPolicy.model_validate(data)
    except ValidationError as exc:
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()
        ]
        raise usage(f"{path}: " + "; ".join(parts)) from None


async def start_watch(client: Client, app: str, *, task_queue: str) -> None:
    """Starts `dr-watch:<app>` unless it runs (it reads the policy every round)."""
    await client.start_workflow(
        DrWatch.run,
        WatchState(app=app),
        id=watch_id(app),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"DR watch of {app}",
        static_details="Probes the primary each round; fails over on a quorum when automatic.",
    )


def lab_policy(
    app: str,
    clusters: list[str],
    *,
    kubeconfig: str = "",
    management_context: str = "lab-mgmt",
    ttl: int = 5,
    automatic: bool = False,
    watch: WatchSettings | None = None,
) -> DrPolicy:
    """The policy of an application the lab seeded on `clusters` (first = primary),
    following the lab's names (docs/lab-dr.md): Cluster `<app>-<member>` in namespace
    `<app>`, endpoint host `<app>-<member>-rw.<app>.svc.<member>.lab`, DNSEndpoint `<app>`
    for `<app>.db.lab` (CNAME) in the management cluster."""
    return DrPolicy(
        app=app,
        namespace=app,
        members=[
            DrMember(
                cluster=c,
                role=Role.PRIMARY if i == 0 else Role.STANDBY,
                database=f"{app}-{c}",
                endpoint=f"{app}-{c}-rw.{app}.svc.{c}.lab",
            )
            for i, c in enumerate(clusters)
        ],
        dns=DnsRecord(
            credential=CredentialRef(kubeconfig=kubeconfig, context=management_context),
            namespace=app,
            name=app,
            dns_name=f"{app}.db.lab",
            record_type="CNAME",
            ttl=ttl,
        ),
        automatic=automatic,
        watch=watch or WatchSettings(),
    )


def _lab_app(text: str, *, ttl: int, automatic: bool) -> DrPolicy:
    """`--lab APP=PRIMARY,STANDBY`: the policy of an app seeded in the local stack's lab."""
    name, sep, members = text.partition("=")
    clusters = [c for c in members.split(",") if c]
    if not sep or len(clusters) < 2:
        raise usage(f"--lab {text!r}: expected APP=PRIMARY,STANDBY[,...]")
    info_path = Settings.from_env().state_dir / "lab" / "lab.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        raise usage(
            f"--lab: no running lab ({info_path} is missing); `flotilla up` first"
        ) from None
    try:
        return lab_policy(
            name,
            clusters,
            management_context=str(info.get("management_context", "lab-mgmt")),
            ttl=ttl,
            automatic=automatic,
        )
    except ValidationError as exc:
        raise usage(f"--lab: {exc.errors()[0]['msg']}") from None


@dr_app.command("register")
def register(
    policy_file: Annotated[
        Path | None, typer.Argument(metavar="[POLICY]", help="YAML or JSON policy.")
    ] = None,
    lab: Annotated[
        str,
        typer.Option(help="Instead of a file: an app the lab seeded, APP=PRIMARY,STANDBY."),
    ] = "",
    automatic: Annotated[bool, typer.Option(help="With --lab: automatic failover.")] = False,
    ttl: Annotated[int, typer.Option(min=1, help="With --lab: the record's TTL.")] = 5,
    watch: Annotated[bool, typer.Option(help="Start the application's watch.")] = True,
) -> None:
    """Create or update an application's DR policy (docs/dr.md has the format)."""
    if (policy_file is None) == (not lab):
        raise usage("give a POLICY file or --lab APP=PRIMARY,STANDBY (one of them)")
    if policy_file is not None:
        policy = load_policy(policy_file)
    else:
        policy = _lab_app(lab, ttl=ttl, automatic=automatic)

    async def go() -> None:
        client = await connect()
        state = await register_policy(client, policy, task_queue=_queue())
        if watch:
            await start_watch(client, policy.app, task_queue=_queue())
        auto = "automatic" if policy.automatic else "manual"
        out.print(
            f"[green]✓[/green] {policy.app}: primary {state.primary}, "
            f"{len(policy.members)} clusters, {auto} failover",
            highlight=False,
        )

    _run(go())


async def _require(client: Client, app: str) -> DrAppState:
    state = await get_app(client, app)
    if state is None:
        raise CliError(f"unknown application {app!r} (see `flotilla dr list`)")
    return state


@dr_app.command("list")
def list_(
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """List applications with a DR policy."""

    async def go() -> None:
        states = await list_apps(await connect())
        if output == "json":
            print(render.dumps(states))
            return
        table = Table(
            "app", "primary", "home", "clusters", "epoch", "failover", "running", "fence pending"
        )
        for s in states:
            table.add_row(
                s.policy.app,
                s.primary,
                s.policy.home,
                ", ".join(m.cluster for m in s.policy.members),
                str(s.epoch),
                "automatic" if s.policy.automatic else "manual",
                s.operation.holder if s.operation else "",
                ", ".join(s.pending_fences),
            )
        out.print(table)

    _run(go())


@dr_app.command("show")
def show(
    app: str,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """An application's policy, primary, epoch and runs."""

    async def go() -> None:
        if api_client.configured():
            found = await api_client.ApiClient.from_env().call("GET", f"/v1/dr/{app}")
            state = DrAppState.model_validate(found)
        else:
            state = await _require(await connect(), app)
        if output == "json":
            print(render.dumps(state))
            return
        out.print(_state_view(state))
        out.print(_runs_table(state.runs, "runs"))

    _run(go())


@dr_app.command("status")
def status(app: str) -> None:
    """The application now: primary, running operation, the watch's last round."""

    async def go() -> None:
        client = await connect()
        state = await _require(client, app)
        out.print(_state_view(state))
        try:
            watch = await client.get_workflow_handle(watch_id(app)).query(
                DrWatch.state, rpc_timeout=timedelta(seconds=5)
            )
        except RPCError:
            out.print("watch: not running (flotilla dr register starts it)")
            return
        sig = watch.last_signals
        if sig is not None:
            out.print(
                f"watch round {watch.rounds}: hub {sig.hub_ok}, standby {sig.standby_ok}, "
                f"client {sig.client_ok}; {watch.last_decision}"
                + (" [bold]awaiting approval[/bold]" if watch.awaiting_approval else ""),
                highlight=False,
            )

    _run(go())


@dr_app.command("drills")
def drills(app: str) -> None:
    """Drill results kept in the application's record (measured RTO/RPO)."""

    async def go() -> None:
        state = await _require(await connect(), app)
        out.print(_runs_table([r for r in state.runs if r.kind == OpKind.DRILL], "drills"))

    _run(go())


@dr_app.command("approve")
def approve(
    app: str, who: Annotated[str, typer.Option(help="Who approves (default: you).")] = ""
) -> None:
    """Admit the automatic failover the watch waits for (past the fleet-wide budget)."""

    async def go() -> None:
        client = await connect()
        await _require(client, app)
        handle = client.get_workflow_handle(watch_id(app))
        try:
            await handle.execute_update(
                DrWatch.approve, ApproveFailover(who=who or getpass.getuser())
            )
        except WorkflowUpdateFailedError as exc:
            raise CliError(failure_message(exc)) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise CliError(f"the watch of {app} is not running") from None
            raise
        out.print(f"[green]✓[/green] failover of {app} approved", highlight=False)

    _run(go())


# ---------------------------------------------------------------- operations


async def check_request(client: Client, kind: OpKind, app: str, target: str) -> DrAppState:
    """Refuses (CliError) what the record would refuse, before anything starts."""
    state = await _require(client, app)
    target = target or default_target(state, kind)
    if not state.policy.has(target):
        clusters = ", ".join(m.cluster for m in state.policy.members)
        raise usage(f"{target!r} is not a cluster of {app}'s DR policy ({clusters})")
    if conflict := operation_conflict(state.operation, ""):
        raise CliError(conflict)
    begin = BeginRequest(
        app=app, holder="", kind=kind, target=target, require_not_primary=kind != OpKind.DRILL
    )
    if problem := begin_problem(state, begin):
        raise usage(problem)
    return state


async def run_operation(
    kind: OpKind,
    app: str,
    *,
    target: str,
    wait: bool,
    run_id: str,
    reason: str,
    force: bool = False,
    change: str = "",
) -> None:
    change_ref = parse_change(change)
    if api_client.configured():
        return await _run_via_api(
            kind,
            app,
            target=target,
            wait=wait,
            run_id=run_id,
            reason=reason,
            force=force,
            change=str(change_ref or ""),
        )
    client = await connect()
    await check_request(client, kind, app, target)
    request = DrRequest(
        app=app,
        target=target,
        who=getpass.getuser(),
        reason=reason,
        force=force,
        change=change_ref,
    )
    workflow_id = f"{kind}:{app}:{run_id or new_id()}"
    await start_run(client, kind, request, workflow_id=workflow_id, task_queue=_queue())
    if not wait:
        out.print(f"started {workflow_id} (follow: flotilla ops watch {workflow_id})")
        return
    ops.require_success(await ops.watch_operation(client, workflow_id, console=out))


async def _run_via_api(
    kind: OpKind,
    app: str,
    *,
    target: str,
    wait: bool,
    run_id: str,
    reason: str,
    force: bool,
    change: str,
) -> None:
    """The same run through the API (the principal is recorded as who asked)."""
    api = api_client.ApiClient.from_env()
    body = {"target": target, "reason": reason, "force": force, "change_id": change}
    started = await api.call("POST", f"/v1/dr/{app}/{kind.value}", body, key=run_id or new_id())
    workflow_id = started["workflow_id"]
    out.print(f"started {workflow_id}")
    if not wait:
        return
    while True:
        op = await api.call("GET", f"/v1/dr/operations/{workflow_id}")
        if op["temporal_status"] != "RUNNING":
            break
        await asyncio.sleep(2)
    out.print(f"{workflow_id}: {op['status']}")
    if op["status"] != "succeeded":
        raise CliError(f"{workflow_id} {op['status']}")


def parse_change(text: str) -> ChangeRef | None:
    """--change: `servicenow:CHG0030001` (or a bare id: ServiceNow); a usage error else."""
    if not text:
        return None
    try:
        return ChangeRef.model_validate(text)
    except ValidationError:
        raise usage(f"--change {text!r}: expected system:ID, e.g. servicenow:CHG0030001") from None


def new_id() -> str:
    from starters.rollouts import new_rollout_id

    return new_rollout_id()


CHANGE_HELP = "ITSM change told how the run goes: servicenow:CHG0030001."


def _operation_command(kind: OpKind, help_text: str) -> None:
    def command(
        app: Annotated[str, typer.Argument(help="The application.")],
        to: Annotated[
            str, typer.Option("--to", help="Cluster to promote (default: the policy's).")
        ] = "",
        wait: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = True,
        run_id: Annotated[str, typer.Option("--id", help="Run id (default: date-time).")] = "",
        reason: Annotated[str, typer.Option(help="Why (kept in the record).")] = "",
        change: Annotated[str, typer.Option(help=CHANGE_HELP)] = "",
    ) -> None:
        _run(
            run_operation(
                kind, app, target=to, wait=wait, run_id=run_id, reason=reason, change=change
            )
        )

    command.__doc__ = help_text
    dr_app.command(kind.value)(command)


_operation_command(
    OpKind.SWITCHOVER, "Planned: fence, demote with a token, catch up, promote, DNS. No loss."
)


@dr_app.command("failover")
def failover(
    app: Annotated[str, typer.Argument(help="The application.")],
    to: Annotated[
        str, typer.Option("--to", help="Cluster to promote (default: the policy's).")
    ] = "",
    wait: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = True,
    run_id: Annotated[str, typer.Option("--id", help="Run id (default: date-time).")] = "",
    reason: Annotated[str, typer.Option(help="Why (kept in the record).")] = "",
    force: Annotated[
        bool,
        typer.Option(help="Promote even if the unfenceable old primary still takes writes."),
    ] = False,
    change: Annotated[str, typer.Option(help=CHANGE_HELP)] = "",
) -> None:
    """Unplanned: fence what answers, promote the standby, DNS; RPO and RTO."""
    _run(
        run_operation(
            OpKind.FAILOVER,
            app,
            target=to,
            wait=wait,
            run_id=run_id,
            reason=reason,
            force=force,
            change=change,
        )
    )


_operation_command(
    OpKind.FAILBACK, "Rebuild the old primary as a replica, catch up, switch over back home."
)


@dr_app.command("drill")
def drill(
    app: str,
    every: Annotated[
        str, typer.Option(help="Also run it on a Temporal Schedule: 7d, 12h (0: remove).")
    ] = "",
    now: Annotated[bool, typer.Option(help="Run a drill now.")] = True,
    wait: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = True,
) -> None:
    """Switch over to a standby and back, and report the measured RTO/RPO."""
    seconds = None
    if every:
        try:
            seconds = parse_duration(every)
        except ValueError as exc:
            raise usage(f"--every: {exc}") from None

    async def go() -> None:
        client = await connect()
        await _require(client, app)
        if seconds is not None:
            await ensure_drill_schedule(client, app, seconds, task_queue=_queue())
            where = f"every {every}" if seconds else "removed"
            out.print(f"drill schedule {drill_schedule_id(app)}: {where}")
        if now:
            await run_operation(OpKind.DRILL, app, target="", wait=wait, run_id="", reason="drill")

    _run(go())


async def ensure_drill_schedule(
    client: Client, app: str, seconds: float, *, task_queue: str
) -> None:
    """Creates or updates `dr-drill:<app>` (a Drill every `seconds`); 0 deletes it."""
    handle = client.get_schedule_handle(drill_schedule_id(app))
    if seconds <= 0:
        with contextlib.suppress(RPCError):  # already absent
            await handle.delete()
        return
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RUNS[OpKind.DRILL].run,  # type: ignore[attr-defined]
            DrRequest(app=app, who="schedule", reason="scheduled drill"),
            id=f"drill:{app}:scheduled",
            task_queue=task_queue,
            static_summary=f"DR drill of {app} (scheduled)",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await put_schedule(client, drill_schedule_id(app), schedule)


# ---------------------------------------------------------------- views


def _state_view(state: DrAppState) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    p = state.policy
    rows: list[tuple[str, Any]] = [
        ("app", p.app),
        ("primary", state.primary + ("" if state.primary == p.home else f" (home: {p.home})")),
        ("epoch", state.epoch),
        ("clusters", ", ".join(f"{m.cluster} ({m.database})" for m in p.members)),
        ("dns", f"{p.dns.dns_name} {p.dns.record_type} TTL {p.dns.ttl}s"),
        ("objectives", f"RTO {p.objectives.rto_seconds:g}s, RPO {p.objectives.rpo_seconds:g}s"),
        ("failover", "automatic" if p.automatic else "manual"),
        ("running", state.operation.holder if state.operation else "nothing"),
        ("fence pending", ", ".join(state.pending_fences) or "none"),
        ("primary health", "DOWN" if state.health.down else "up"),
    ]
    for key, value in rows:
        grid.add_row(key, render.cell(value))
    return grid


def _runs_table(runs: list[RunRecord], title: str) -> Table:
    table = Table(
        "id",
        "kind",
        "from",
        "to",
        "epoch",
        "outcome",
        "RTO s",
        "RPO bytes",
        "finished",
        title=title,
    )
    for r in reversed(runs):
        rto = [f"{m.rto_seconds:.1f}" for m in r.measurements if m.rto_seconds is not None]
        rpo = [str(m.rpo_bytes) for m in r.measurements if m.rpo_bytes is not None]
        table.add_row(
            r.id,
            r.kind.value,
            r.source,
            r.target,
            str(r.epoch),
            render.styled(r.outcome.value),
            " / ".join(rto),
            " / ".join(rpo),
            f"{r.finished_at:%Y-%m-%d %H:%M:%S}",
        )
    return table
