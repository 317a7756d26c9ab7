"""`flotilla <operation> plan|start` for every kind in the operation registry, and the
rollout controls `flotilla ops pause|resume|approve|skip|abort|rollback ID`.

The flags of plan/start are generated (starters/spec_flags.py) from the kind's target
model and from RolloutOptions, so a new kind or option needs no CLI code. Mount with
`mount(app, ops_app)`. Mistakes raise CliError (usage: exit 2) and Temporal failures
propagate, so `starters.cli.main` prints one line and exits non-zero.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from fleet.connect import connect
from fleet.rollout_models import (
    ApproveRequest,
    ControlRequest,
    Outcome,
    Plan,
    RolloutOptions,
    RolloutReport,
    RolloutSpec,
    SkipRequest,
    WaveStatus,
)
from fleet.wave_specs import PlanError
from starters import api_client, rollouts
from starters.errors import CliError, usage
from starters.spec_flags import Flag, command, extra_flag, model_flags, validation_message
from workflows.registry import OPERATIONS, Operation

T = TypeVar("T")
out = Console()

SPEC_FLAGS = [
    extra_flag(
        "selector",
        str,
        "",
        "--selector",
        "-l",
        help="Label selector of clusters.",
        path=("selector",),
    ),
    extra_flag(
        "waves",
        str,
        "canary:1,50%,rest",
        help="Waves: counts, shares, selectors or rest, e.g. canary:1,50%,rest.",
        path=("waves",),
    ),
    extra_flag(
        "rollout_id", str, "", "--id", help="Rollout id (default: date-time based).", path=("id",)
    ),
]
CHANGE = extra_flag(
    "change",
    str,
    "",
    help="ITSM change that approved the run, told how it goes: servicenow:CHG0030001.",
    path=("change",),
)
CHECK = extra_flag("check", bool, True, help="Check every planned cluster live (needs a worker).")
JSON = extra_flag("as_json", bool, False, "--json", help="Print JSON instead of tables.")
WAIT = extra_flag("wait", bool, False, help="Wait for the run and print its report.")


def _run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def make_spec(operation: Operation, flags: list[Flag], values: dict[str, Any]) -> RolloutSpec:
    """The spec the flags describe; a bad value is a usage error naming its flag."""
    values.setdefault("id", rollouts.new_rollout_id())
    values.setdefault("started_by", _who(""))
    values["operation"] = {"kind": operation.kind, **values.get("operation", {})}
    try:
        return RolloutSpec.model_validate(values)
    except ValidationError as exc:
        raise usage(validation_message(exc, flags)) from None


def _flags(operation: Operation, *, start: bool) -> list[Flag]:
    target = model_flags(operation.target, ("operation",))
    if not start:
        return target
    skip = {"kind"} | (set() if operation.target.undoable else {"auto_rollback"})
    return target + model_flags(RolloutOptions, ("options",), skip=frozenset(skip))


def plan_command(operation: Operation) -> Any:
    flags = _flags(operation, start=False) + SPEC_FLAGS + [CHECK, JSON]

    def body(values: dict[str, Any], kwargs: dict[str, Any]) -> None:
        spec = make_spec(operation, flags, values)

        async def go() -> Plan:
            client = await connect()
            plan = await _make_plan(client, spec)
            if kwargs["check"]:
                await rollouts.check_plan(client, plan)
            return plan

        plan = _run(go())
        if kwargs["as_json"]:
            out.print_json(plan.model_dump_json())
        else:
            print_plan(plan)

    doc = "Print the exact clusters per wave; refuse impossible plans. Changes nothing."
    return command(flags, body, name="plan", doc=doc)


def start_command(operation: Operation) -> Any:
    flags = _flags(operation, start=True) + SPEC_FLAGS + [CHANGE, CHECK, WAIT, JSON]

    def body(values: dict[str, Any], kwargs: dict[str, Any]) -> None:
        spec = make_spec(operation, flags, values)
        _run(_start(spec, check=kwargs["check"], wait=kwargs["wait"], as_json=kwargs["as_json"]))

    doc = f"Start a rollout (`rollout:{operation.kind}:<id>`): {operation.help}"
    return command(flags, body, name="start", doc=doc)


async def _make_plan(client: Any, spec: RolloutSpec) -> Plan:
    try:
        return await rollouts.make_plan(client, spec)
    except PlanError as exc:
        raise CliError(f"plan refused: {exc}") from None


async def _start(spec: RolloutSpec, *, check: bool, wait: bool, as_json: bool) -> None:
    """Plans, checks the plan live (so a refused plan fails here, not inside a run the
    caller believes started), then starts; all on one connection. Through the API when
    FLOTILLA_API is set (it always checks the plan)."""
    if api_client.configured():
        return await _start_via_api(spec, wait=wait, as_json=as_json)
    client = await connect()
    plan = await _make_plan(client, spec)
    if check:
        await rollouts.check_plan(client, plan)
    handle = await rollouts.start_rollout(client, plan)
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
    if report.outcome != Outcome.SUCCEEDED:
        raise CliError(f"{report.id} {report.outcome.value}: {report.halt_reason}".rstrip(": "))


async def _start_via_api(spec: RolloutSpec, *, wait: bool, as_json: bool) -> None:
    api = api_client.ApiClient.from_env()
    body = spec.model_dump(mode="json", include={"operation", "selector", "waves", "options"})
    started = await api.call("POST", "/v1/rollouts", body, key=spec.id)
    workflow_id = started["workflow_id"]
    if not wait:
        if as_json:
            out.print_json(data=started)
        else:
            names = ", ".join(started.get("clusters") or [])
            out.print(f"started {workflow_id} on {names}; follow it with `flotilla ops show`")
        return
    while True:
        op = await api.call("GET", f"/v1/operations/{workflow_id}")
        if op["status"] != Outcome.RUNNING.value and op.get("result") is not None:
            break
        await asyncio.sleep(2)
    report = RolloutReport.model_validate(op["result"])
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        print_report(report)
    if report.outcome != Outcome.SUCCEEDED:
        raise CliError(f"{report.id} {report.outcome.value}: {report.halt_reason}".rstrip(": "))


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
    table = Table(title=f"{report.id}: {report.outcome.value} ({report.target})")
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


# ---------------------------------------------------------------- controls

RolloutArg = Annotated[str, typer.Argument(help="Rollout id: rollout:k8s:<id> or k8s:<id>.")]
Who = Annotated[str, typer.Option(help="Who asks (default: your user name).")]
Reason = Annotated[str, typer.Option(help="Why (kept in the report).")]


def _who(who: str) -> str:
    return who or getpass.getuser()


def _send(rollout: str, action: str, request: Any) -> None:
    async def go() -> None:
        if api_client.configured():  # the API records the caller as who; --who is ignored
            body = request.model_dump(exclude={"who"})
            answer = await _api_control(rollout, action, body)
            out.print(f"{rollouts.workflow_id(rollout)}: {action} recorded ({answer['who']})")
            return
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
    rollout: RolloutArg,
    wave: Annotated[
        str, typer.Option(help="The wave you approve (default: the one waiting, shown first).")
    ] = "",
    who: Who = "",
    note: Annotated[str, typer.Option(help="Note.")] = "",
) -> None:
    """Admit the wave that waits for approval; refused for any other wave."""

    async def go() -> None:
        if api_client.configured():
            name = wave or await _waiting_wave_via_api(rollout)
            answer = await _api_control(rollout, "approve", {"wave": name, "comment": note})
            out.print(f"{rollouts.workflow_id(rollout)}: approve recorded ({answer['who']})")
            return
        client = await connect()
        name = wave
        if not name:
            progress = await rollouts.progress(client, rollout)
            waiting = [w for w in progress.waves if w.status == WaveStatus.AWAITING_APPROVAL]
            if not waiting:
                raise CliError(f"{progress.id} is not waiting for an approval")
            name = waiting[0].name
            out.print(f"approving wave {name} ({len(waiting[0].clusters)} clusters)")
        request = ApproveRequest(who=_who(who), wave=name, note=note)
        event = await rollouts.control(client, rollout, "approve", request)
        out.print(f"{rollouts.workflow_id(rollout)}: {event.action} recorded ({event.who})")

    _run(go())


async def _api_control(rollout: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    path = f"/v1/operations/{rollouts.workflow_id(rollout)}/{action}"
    answer: dict[str, Any] = await api_client.ApiClient.from_env().call("POST", path, body)
    return answer


async def _waiting_wave_via_api(rollout: str) -> str:
    op = await api_client.ApiClient.from_env().call(
        "GET", f"/v1/operations/{rollouts.workflow_id(rollout)}"
    )
    waves = (op.get("progress") or {}).get("waves") or []
    waiting = [w for w in waves if w.get("status") == WaveStatus.AWAITING_APPROVAL.value]
    if not waiting:
        raise CliError(f"{op['workflow_id']} is not waiting for an approval")
    out.print(f"approving wave {waiting[0]['name']} ({len(waiting[0]['clusters'])} clusters)")
    return str(waiting[0]["name"])


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
    """Undoable kinds (add-ons): stop and undo the change where it was made, newest first."""
    _send(rollout, "rollback", ControlRequest(who=_who(who), reason=reason))


def _group(app: typer.Typer, path: str) -> typer.Typer:
    """The group `path` names ("" is `app`; "certs" the group of that name, mounted first
    by its own module, or created here when it is not)."""
    for name in path.split():
        found = next(
            (
                g.typer_instance
                for g in app.registered_groups
                if g.name == name and g.typer_instance is not None
            ),
            None,
        )
        if found is None:
            found = typer.Typer(no_args_is_help=True)
            app.add_typer(found, name=name)
        app = found
    return app


def mount(app: typer.Typer, ops_app: typer.Typer) -> None:
    """Adds each registered operation's `plan`/`start` and the controls to `ops`."""
    for operation in OPERATIONS:
        if not operation.generated_cli:
            continue
        group = typer.Typer(help=operation.help, no_args_is_help=True)
        group.command("plan")(plan_command(operation))
        group.command("start")(start_command(operation))
        parent, _, name = operation.command.rpartition(" ")
        _group(app, parent).add_typer(group, name=name)
    for control in (pause, resume, approve, skip, abort, rollback):
        ops_app.command(control.__name__)(control)
