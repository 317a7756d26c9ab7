"""`flotilla upgrade|addon plan|start` and the rollout controls `flotilla ops
pause|resume|approve|skip|abort|rollback ID`.

Mount with `mount(app, ops_app)`. Mistakes raise CliError (usage: exit 2) and Temporal
failures propagate, so `starters.cli.main` prints one line and exits non-zero.
"""

from __future__ import annotations

import asyncio
import getpass
import re
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from fleet.connect import connect
from fleet.rollout_models import (
    AddonTarget,
    ApproveRequest,
    ControlRequest,
    K8sTarget,
    Plan,
    RolloutOptions,
    RolloutReport,
    RolloutSpec,
    SkipRequest,
)
from fleet.versions import VersionError, parse_version
from fleet.waves import PlanError
from starters import rollouts
from starters.errors import CliError, usage

T = TypeVar("T")

upgrade_app = typer.Typer(help="Kubernetes version rollouts (Cluster API).", no_args_is_help=True)
addon_app = typer.Typer(help="Add-on image rollouts (Deployment/DaemonSet).", no_args_is_help=True)
out = Console()

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# ---------------------------------------------------------------- shared options

Selector = Annotated[str, typer.Option("--selector", "-l", help="Label selector of clusters.")]
Waves = Annotated[
    str, typer.Option(help="Waves: counts, shares, selectors or rest, e.g. canary:1,50%,rest.")
]
MaxConcurrent = Annotated[int, typer.Option(min=1, max=500, help="Clusters at once per wave.")]
Budget = Annotated[str, typer.Option(help="Failures tolerated in the run: 1 or 10%.")]
WaveBudget = Annotated[str, typer.Option(help="Failures tolerated per wave (default: none).")]
Soak = Annotated[str, typer.Option(help="Wait after each wave: 0, 30s, 10m, 1h.")]
ApproveBetween = Annotated[bool, typer.Option(help="Wait for `ops approve` before each wave.")]
SkipUnreachable = Annotated[
    bool,
    typer.Option(
        "--skip-unreachable/--fail-unreachable",
        help="Unreachable clusters: skip and report, or count as failures.",
    ),
]
WindowOpt = Annotated[
    str, typer.Option("--window", help="Maintenance window, e.g. 'Sat 02:00-06:00' (UTC).")
]
HealthGates = Annotated[bool, typer.Option(help="Health gates before/after clusters and waves.")]
ClusterTimeout = Annotated[str, typer.Option(help="Time one cluster may take: 30m, 2h.")]
RolloutId = Annotated[str, typer.Option("--id", help="Rollout id (default: date-time based).")]
Check = Annotated[bool, typer.Option(help="Check every planned cluster live (needs a worker).")]
Wait = Annotated[bool, typer.Option(help="Wait for the run and print its report.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def parse_duration(text: str) -> float:
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise usage(f"bad duration {text!r} (expected like 0, 30s, 10m, 1h)")
    return float(match[1]) * _UNITS[match[2]]


def _options(**values: Any) -> RolloutOptions:
    return RolloutOptions(
        max_concurrent=values["max_concurrent"],
        failure_budget=values["failure_budget"],
        wave_failure_budget=values["wave_failure_budget"],
        soak_seconds=parse_duration(values["soak"]),
        approve_between=values["approve_between"],
        skip_unreachable=values["skip_unreachable"],
        window=values["window"],
        health_gates=values["health_gates"],
        auto_rollback=values.get("auto_rollback", False),
        cluster_timeout_seconds=parse_duration(values["cluster_timeout"]),
    )


def _run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


async def _plan(spec: RolloutSpec, *, check: bool) -> Plan:
    client = await connect()
    try:
        plan = await rollouts.make_plan(client, spec)
    except PlanError as exc:
        raise CliError(f"plan refused: {exc}") from None
    if check:
        await rollouts.check_plan(client, plan)
    return plan


async def _start(spec: RolloutSpec, *, check: bool, wait: bool, as_json: bool) -> None:
    """Plans, checks the plan live (so a refused plan fails here, not inside a run the
    caller believes started), then starts."""
    plan = await _plan(spec, check=check)
    handle = await rollouts.start_rollout(await connect(), plan)
    if not wait:
        if as_json:
            out.print_json(data={"id": handle.id, "plan": plan.model_dump(mode="json")})
        else:
            print_plan(plan)
            out.print(f"started {handle.id}; follow it with `flotilla ops watch {handle.id}`")
        return
    report = await handle.result()
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        print_report(report)
    if report.status.value not in ("completed",):
        raise CliError(f"{report.id} {report.status.value}: {report.halt_reason}")


def print_plan(plan: Plan) -> None:
    table = Table(title=f"{plan.spec.workflow_id}: {len(plan.cluster_names())} clusters")
    for column in ("wave", "spec", "clusters", "names"):
        table.add_column(column)
    for wave in plan.waves:
        names = ", ".join(c.name for c in wave.clusters)
        table.add_row(wave.name, wave.text, str(len(wave.clusters)), names)
    out.print(table)
    for note in plan.notes:
        out.print(f"note: {note}")


def print_report(report: RolloutReport) -> None:
    table = Table(title=f"{report.id}: {report.status.value} ({report.target})")
    for column in ("cluster", "wave", "status", "from", "to", "seconds", "reason"):
        table.add_column(column)
    for o in report.outcomes:
        seconds = f"{o.duration_seconds:.0f}" if o.duration_seconds is not None else ""
        row = (o.name, o.wave, o.status.value, o.from_version, o.to_version, seconds, o.reason)
        table.add_row(*row)
    out.print(table)
    for approval in report.approvals:
        out.print(f"approved wave {approval.wave + 1} by {approval.who} at {approval.at:%F %T}")
    for label, names in (("left the fleet", report.left), ("joined (not included)", report.joined)):
        if names:
            out.print(f"{label}: {', '.join(names)}")
    if report.halt_reason:
        out.print(report.halt_reason)


def _show_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        out.print_json(plan.model_dump_json())
    else:
        print_plan(plan)


# ---------------------------------------------------------------- upgrade


def _k8s_spec(to: str, rollout_id: str, selector: str, waves: str, **options: Any) -> RolloutSpec:
    try:
        parse_version(to)
    except VersionError as exc:
        raise usage(str(exc)) from None
    return RolloutSpec(
        id=rollout_id or rollouts.new_rollout_id(),
        selector=selector,
        waves=[waves],
        operation=K8sTarget(version=to),
        options=_options(**options),
    )


@upgrade_app.command("plan")
def upgrade_plan(
    to: Annotated[str, typer.Option(help="Target Kubernetes version, e.g. v1.31.2.")],
    selector: Selector = "",
    waves: Waves = "canary:1,50%,rest",
    rollout_id: RolloutId = "",
    check: Check = True,
    as_json: Json = False,
) -> None:
    """Print the exact clusters per wave; refuse impossible plans. Changes nothing."""
    spec = _k8s_spec(to, rollout_id, selector, waves, **_defaults())
    _show_plan(_run(_plan(spec, check=check)), as_json)


@upgrade_app.command("start")
def upgrade_start(
    to: Annotated[str, typer.Option(help="Target Kubernetes version, e.g. v1.31.2.")],
    selector: Selector = "",
    waves: Waves = "canary:1,50%,rest",
    max_concurrent: MaxConcurrent = 5,
    failure_budget: Budget = "0",
    wave_failure_budget: WaveBudget = "",
    soak: Soak = "0",
    approve_between: ApproveBetween = False,
    skip_unreachable: SkipUnreachable = True,
    window: WindowOpt = "",
    health_gates: HealthGates = True,
    cluster_timeout: ClusterTimeout = "30m",
    rollout_id: RolloutId = "",
    check: Check = True,
    wait: Wait = False,
    as_json: Json = False,
) -> None:
    """Start a Kubernetes upgrade rollout (`rollout:k8s:<id>`)."""
    spec = _k8s_spec(
        to,
        rollout_id,
        selector,
        waves,
        max_concurrent=max_concurrent,
        failure_budget=failure_budget,
        wave_failure_budget=wave_failure_budget,
        soak=soak,
        approve_between=approve_between,
        skip_unreachable=skip_unreachable,
        window=window,
        health_gates=health_gates,
        cluster_timeout=cluster_timeout,
    )
    _run(_start(spec, check=check, wait=wait, as_json=as_json))


# ---------------------------------------------------------------- addon


def _addon_spec(
    target: AddonTarget, rollout_id: str, selector: str, waves: str, **options: Any
) -> RolloutSpec:
    return RolloutSpec(
        id=rollout_id or rollouts.new_rollout_id(),
        selector=selector,
        waves=[waves],
        operation=target,
        options=_options(**options),
    )


Name = Annotated[str, typer.Option("--name", help="Workload name, e.g. coredns.")]
Namespace = Annotated[str, typer.Option(help="Workload namespace.")]
Kind = Annotated[str, typer.Option("--kind", help="deployment or daemonset.")]
Container = Annotated[str, typer.Option(help="Container name (default: the first).")]
Image = Annotated[str, typer.Option(help="New image, e.g. registry.k8s.io/coredns:v1.11.3.")]


def _target(name: str, namespace: str, kind: str, container: str, image: str) -> AddonTarget:
    if kind not in ("deployment", "daemonset"):
        raise usage(f"--kind must be deployment or daemonset, not {kind!r}")
    if not image.strip():
        raise usage("--image must not be empty")
    return AddonTarget(
        name=name,
        namespace=namespace,
        workload=kind,
        container=container,
        image=image,
    )


@addon_app.command("plan")
def addon_plan(
    name: Name,
    image: Image,
    namespace: Namespace = "kube-system",
    kind: Kind = "deployment",
    container: Container = "",
    selector: Selector = "",
    waves: Waves = "canary:1,50%,rest",
    rollout_id: RolloutId = "",
    check: Check = True,
    as_json: Json = False,
) -> None:
    """Print the exact clusters per wave; refuse unknown add-ons. Changes nothing."""
    target = _target(name, namespace, kind, container, image)
    spec = _addon_spec(target, rollout_id, selector, waves, **_defaults())
    _show_plan(_run(_plan(spec, check=check)), as_json)


@addon_app.command("start")
def addon_start(
    name: Name,
    image: Image,
    namespace: Namespace = "kube-system",
    kind: Kind = "deployment",
    container: Container = "",
    selector: Selector = "",
    waves: Waves = "canary:1,50%,rest",
    max_concurrent: MaxConcurrent = 5,
    failure_budget: Budget = "0",
    wave_failure_budget: WaveBudget = "",
    soak: Soak = "0",
    approve_between: ApproveBetween = False,
    skip_unreachable: SkipUnreachable = True,
    window: WindowOpt = "",
    health_gates: HealthGates = True,
    cluster_timeout: ClusterTimeout = "10m",
    auto_rollback: Annotated[
        bool, typer.Option(help="On halt, restore the previous image where it changed.")
    ] = False,
    rollout_id: RolloutId = "",
    check: Check = True,
    wait: Wait = False,
    as_json: Json = False,
) -> None:
    """Start an add-on image rollout (`rollout:addon:<id>`)."""
    target = _target(name, namespace, kind, container, image)
    spec = _addon_spec(
        target,
        rollout_id,
        selector,
        waves,
        max_concurrent=max_concurrent,
        failure_budget=failure_budget,
        wave_failure_budget=wave_failure_budget,
        soak=soak,
        approve_between=approve_between,
        skip_unreachable=skip_unreachable,
        window=window,
        health_gates=health_gates,
        cluster_timeout=cluster_timeout,
        auto_rollback=auto_rollback,
    )
    _run(_start(spec, check=check, wait=wait, as_json=as_json))


def _defaults() -> dict[str, Any]:
    return dict(
        max_concurrent=5,
        failure_budget="0",
        wave_failure_budget="",
        soak="0",
        approve_between=False,
        skip_unreachable=True,
        window="",
        health_gates=True,
        cluster_timeout="30m",
    )


# ---------------------------------------------------------------- controls

RolloutArg = Annotated[str, typer.Argument(help="Rollout id: rollout:k8s:<id> or k8s:<id>.")]
Who = Annotated[str, typer.Option(help="Who asks (default: your user name).")]
Reason = Annotated[str, typer.Option(help="Why (kept in the report).")]


def _who(who: str) -> str:
    return who or getpass.getuser()


def _send(rollout: str, action: str, request: Any) -> None:
    async def go() -> None:
        client = await connect()
        event = await rollouts.control(client, rollout, action, request)
        out.print(f"{rollouts.workflow_id(rollout)}: {event.action} recorded ({event.who})")

    _run(go())


def pause(rollout: RolloutArg, who: Who = "", reason: Reason = "") -> None:
    """Start no new clusters until resumed (running ones finish)."""
    _send(rollout, "pause", ControlRequest(who=_who(who), reason=reason))


def resume(rollout: RolloutArg, who: Who = "", reason: Reason = "") -> None:
    """Resume a paused rollout."""
    _send(rollout, "resume", ControlRequest(who=_who(who), reason=reason))


def approve(
    rollout: RolloutArg, who: Who = "", note: Annotated[str, typer.Option(help="Note.")] = ""
) -> None:
    """Admit the wave that waits for approval."""
    _send(rollout, "approve", ApproveRequest(who=_who(who), note=note))


def skip(
    rollout: RolloutArg,
    cluster: Annotated[str, typer.Argument(help="Cluster not yet started.")],
    who: Who = "",
    reason: Reason = "",
) -> None:
    """Leave one not-yet-started cluster out of the run."""
    _send(rollout, "skip", SkipRequest(cluster=cluster, who=_who(who), reason=reason))


def abort(rollout: RolloutArg, who: Who = "", reason: Reason = "") -> None:
    """Stop: no new clusters; running ones reach a safe point and release their locks."""
    _send(rollout, "abort", ControlRequest(who=_who(who), reason=reason))


def rollback(rollout: RolloutArg, who: Who = "", reason: Reason = "") -> None:
    """Add-on rollouts: stop and restore the previous image where it changed, newest first."""
    _send(rollout, "rollback", ControlRequest(who=_who(who), reason=reason))


def mount(app: typer.Typer, ops_app: typer.Typer) -> None:
    """Adds `upgrade` and `addon` to the root app and the controls to `ops`."""
    app.add_typer(upgrade_app, name="upgrade")
    app.add_typer(addon_app, name="addon")
    for command in (pause, resume, approve, skip, abort, rollback):
        ops_app.command(command.__name__)(command)
