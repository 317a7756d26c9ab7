"""The `flotilla` command.

Every command connects through fleet.connect (SDK env config: TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, profiles; `--address/--namespace` win). Mistakes print one line on
stderr and exit 2 (usage) or 1 (operation failed); see starters/errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

import typer
import yaml
from rich.console import Console
from temporalio.client import Client
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from fleet.config import Settings
from fleet.connect import connect
from fleet.ids import cluster_name_error, labels_error
from fleet.models import (
    ClusterRecord,
    CredentialRef,
    ManagementRef,
    OnboardRequest,
    Phase,
    RecordsQuery,
)
from fleet.selectors import parse_selector
from starters import api_client, kubeconfigs, ops, render
from starters.errors import USAGE, CliError, translate, usage

if TYPE_CHECKING:
    from starters.stack import StackOptions

T = TypeVar("T")

app = typer.Typer(
    name="flotilla",
    help="Durable lifecycle automation for fleets of Kubernetes clusters, on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
clusters_app = typer.Typer(help="The cluster inventory.", no_args_is_help=True)
ops_app = typer.Typer(
    help="Operations: onboarding, health sweeps, rollouts...", no_args_is_help=True
)
app.add_typer(clusters_app, name="clusters")
app.add_typer(ops_app, name="ops")
api_app = typer.Typer(
    help="Flotilla's API for people, pipelines and ITSM (docs/access.md).", no_args_is_help=True
)
app.add_typer(api_app, name="api")
webhook_app = typer.Typer(
    help="The API, by its former name (`flotilla api`).", no_args_is_help=True
)
app.add_typer(webhook_app, name="webhook")

out = Console()
err = Console(stderr=True)


class Output(StrEnum):
    table = "table"
    json = "json"


@app.callback()
def root(
    address: Annotated[
        str | None, typer.Option(help="Temporal address host:port (default: env config).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Temporal namespace (default: env config).")
    ] = None,
) -> None:
    # Through the environment so every client (sub-apps included) sees the override.
    if address:
        os.environ["TEMPORAL_ADDRESS"] = address
    if namespace:
        os.environ["TEMPORAL_NAMESPACE"] = namespace


# ---------------------------------------------------------------- stack and demo


@app.command()
def up(
    temporal: Annotated[bool, typer.Option(help="Start a local Temporal dev server.")] = True,
    temporal_address: Annotated[
        str, typer.Option(help="Use this Temporal server instead of starting one.")
    ] = "",
    lab: Annotated[bool, typer.Option(help="Start the lab fleet.")] = True,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig for the worker when --no-lab.")
    ] = None,
    worker: Annotated[bool, typer.Option(help="Start the worker.")] = True,
    clusters: Annotated[int, typer.Option(min=1, help="Lab workload clusters.")] = 6,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Temporal gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Temporal Web UI port.")] = 8233,
) -> None:
    """Run the local stack (Temporal dev server, lab, worker) until Ctrl-C."""
    from starters import stack

    options = _stack_options(
        temporal=temporal,
        temporal_address=temporal_address,
        lab=lab,
        kubeconfig=kubeconfig,
        worker=worker,
        clusters=clusters,
        port=port,
        ui_port=ui_port,
    )
    _run(lambda: stack.serve(options, console=err))


@app.command()
def demo(
    exit_when_done: Annotated[
        bool, typer.Option("--exit", help="Exit when done (also FLOTILLA_DEMO_EXIT=1).")
    ] = False,
    clusters: Annotated[int, typer.Option(min=1, help="Lab workload clusters.")] = 6,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Temporal gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Temporal Web UI port.")] = 8233,
) -> None:
    """Start the stack, onboard the lab fleet, run a sample fleet operation."""
    from starters import stack
    from starters.demo import run as run_demo

    options = _stack_options(clusters=clusters, port=port, ui_port=ui_port)
    exit_when_done = exit_when_done or os.environ.get("FLOTILLA_DEMO_EXIT", "") in ("1", "true")
    _run(
        lambda: stack.serve(
            options,
            console=err,
            after_start=lambda s: run_demo(s, console=out, exit_when_done=exit_when_done),
        )
    )


@api_app.command("serve")
@webhook_app.command("serve")
def api_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port.")] = 8088,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth", help="Accept unauthenticated requests (local experiments only)."
        ),
    ] = False,
) -> None:
    """Serve Flotilla's API (docs/access.md, docs/webhooks.md) until Ctrl-C.

    Roles and teams from FLOTILLA_ACCESS_FILE; API tokens from the database
    (FLOTILLA_DATABASE_URL); OIDC from FLOTILLA_OIDC_*; the webhook's
    FLOTILLA_WEBHOOK_SECRET and FLOTILLA_WEBHOOK_TOKEN."""
    from starters import api

    _run(lambda: api.serve(host=host, port=port, insecure_no_auth=insecure_no_auth, console=err))


def _stack_options(
    *,
    temporal: bool = True,
    temporal_address: str = "",
    lab: bool = True,
    kubeconfig: Path | None = None,
    worker: bool = True,
    clusters: int,
    port: int,
    ui_port: int,
) -> StackOptions:
    from starters.stack import settings_options

    if temporal_address:
        temporal = False
    if kubeconfig is not None:
        if lab:
            raise usage("--kubeconfig is for an existing fleet: combine it with --no-lab")
        kubeconfigs.load(kubeconfig)
    overrides: dict[str, Any] = dict(
        temporal=temporal,
        temporal_address=temporal_address,
        lab=lab,
        worker=worker,
        clusters=clusters,
        port=port,
        ui_port=ui_port,
        namespace=os.environ.get("TEMPORAL_NAMESPACE", "default"),
    )
    if kubeconfig is not None:
        overrides["kubeconfig"] = str(kubeconfig.expanduser().absolute())
    return settings_options(**overrides)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def lab(ctx: typer.Context) -> None:
    """The lab fleet: `flotilla lab up|status|fault|clear|add|remove ...` (`python -m lab`).

    Without --dir, the lab directory is the local stack's: $FLOTILLA_STATE_DIR/lab."""
    args = list(ctx.args)
    if args and not args[0].startswith("-") and not any(a.startswith("--dir") for a in args):
        args[1:1] = ["--dir", str(Settings.from_env().state_dir / "lab")]
    command = [sys.executable, "-m", "lab", *args]
    sys.stdout.flush()
    os.execv(sys.executable, command)


# ---------------------------------------------------------------- clusters


@clusters_app.command("onboard")
def clusters_onboard(
    name: Annotated[
        str | None, typer.Argument(help="Cluster name (omit with --all-contexts).")
    ] = None,
    context: Annotated[str, typer.Option(help="Kubeconfig context of the cluster.")] = "",
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig file (default: FLOTILLA_KUBECONFIG, lab, KUBECONFIG)."),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Label k=v (repeatable).")
    ] = None,
    capi_context: Annotated[
        str, typer.Option(help="Context of the Cluster API management cluster.")
    ] = "",
    capi_namespace: Annotated[str, typer.Option(help="Namespace of the CAPI objects.")] = "default",
    all_contexts: Annotated[
        bool, typer.Option(help="Onboard every context of the kubeconfig (bulk).")
    ] = False,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Context to skip with --all-contexts (repeatable).")
    ] = None,
    strip_prefix: Annotated[
        str, typer.Option(help="Cluster name = context name without this prefix (e.g. lab-).")
    ] = "",
    labels_from: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON labels per cluster: {name: {k: v}} or lab.json."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until onboarding finishes.")] = True,
) -> None:
    """Onboard one cluster, or every context of a kubeconfig with --all-contexts.

    The cluster's credential stays where it is: Flotilla records the kubeconfig path (when
    given) and the context name; the worker reads the credential when it needs it."""
    labels = parse_labels(label or [])
    per_cluster = load_labels_file(labels_from) if labels_from else {}
    config = kubeconfigs.load(kubeconfig)
    if capi_context:
        config.require(capi_context, flag="--capi-context")
    if all_contexts:
        if name or context:
            raise usage("--all-contexts onboards every context: drop NAME and --context")
        for excluded in exclude or []:
            config.require(excluded, flag="--exclude")
        skip = set(exclude or []) | {capi_context}
        targets = [(c.removeprefix(strip_prefix), c) for c in config.contexts if c not in skip]
        if not targets:
            raise usage(f"no contexts left to onboard in {config.path}")
    else:
        if not name:
            raise usage("missing cluster NAME (or use --all-contexts)")
        if not context:
            raise usage("missing --context: the kubeconfig context of the cluster")
        targets = [(name, config.require(context))]
    kubeconfig_ref = str(config.path) if config.explicit else ""
    requests = []
    for cluster, ctx_name in targets:
        if problem := cluster_name_error(cluster):
            hint = " (see --strip-prefix)" if all_contexts else ""
            raise usage(f"{problem}{hint}")
        management = None
        if capi_context:
            management = ManagementRef(
                credential=CredentialRef(kubeconfig=kubeconfig_ref, context=capi_context),
                namespace=capi_namespace,
                cluster=cluster,
            )
        requests.append(
            OnboardRequest(
                name=cluster,
                credential=CredentialRef(kubeconfig=kubeconfig_ref, context=ctx_name),
                labels={**per_cluster.get(cluster, {}), **labels},
                management=management,
            )
        )
    _run(lambda: onboard_all(requests, wait=wait))


async def onboard_all(
    requests: list[OnboardRequest], *, wait: bool, client: Client | None = None
) -> None:
    """Starts every onboarding at once; with `wait`, reports each outcome on its own line
    and fails (exit 1) when any failed."""
    from starters import inventory

    if api_client.configured():
        return await _onboard_via_api(requests, wait=wait)
    client = client or await _client()
    if not wait:
        for request in requests:
            await inventory.onboard(client, request, wait=False)
            wf_id = f"onboard:{request.name}"
            out.print(f"started {wf_id} (follow: flotilla ops watch {wf_id})", highlight=False)
        return
    results = await inventory.onboard_many(client, requests)
    failures = 0
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, BaseException):
            problem = translate(result)
            if problem is None:
                raise result
            failures += 1
            err.print(f"[red]✗[/red] {request.name}: {problem.message}", highlight=False)
        else:
            r = result.record
            out.print(
                f"[green]✓[/green] {r.name} onboarded: {r.version or '?'}, "
                f"{r.node_count} nodes, {r.health}",
                highlight=False,
            )
    if failures:
        raise CliError(f"{failures} of {len(requests)} onboarding(s) failed")


async def _onboard_via_api(requests: list[OnboardRequest], *, wait: bool) -> None:
    """Onboarding through the API (admin); with `wait`, polls each record until it leaves
    the onboarding phase."""
    api = api_client.ApiClient.from_env()
    for request in requests:
        await api.call("POST", "/v1/clusters", request.model_dump(mode="json"))
        out.print(f"started onboard:{request.name}", highlight=False)
    if not wait:
        return
    for request in requests:
        path = f"/v1/clusters/{quote(request.name, safe='')}"
        for _ in range(600):
            with contextlib.suppress(CliError):  # not recorded yet
                record = ClusterRecord.model_validate(await api.call("GET", path))
                if record.phase != Phase.ONBOARDING:
                    out.print(f"[green]✓[/green] {record.name} {record.phase}", highlight=False)
                    break
            await asyncio.sleep(1)
        else:
            raise CliError(f"{request.name} is still onboarding; see `flotilla clusters show`")


def load_labels_file(path: Path) -> dict[str, dict[str, str]]:
    """Labels per cluster from `{name: {k: v}}` or a lab.json-like `{"clusters": [...]}`."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise usage(f"--labels-from: cannot read {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("clusters"), list):
        data = {c.get("name"): c.get("labels", {}) for c in data["clusters"] if isinstance(c, dict)}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise usage(f"--labels-from: {path} must map cluster names to labels")
    labels = {str(k): {str(a): str(b) for a, b in v.items()} for k, v in data.items()}
    for name, items in labels.items():
        if problem := labels_error(items):
            raise usage(f"--labels-from: {name}: {problem}")
    return labels


@clusters_app.command("list")
def clusters_list(
    selector: Annotated[
        str,
        typer.Option("--selector", "-l", help="Label selector, e.g. env=prod,region in (eu,us)."),
    ] = "",
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
    include_offboarded: Annotated[bool, typer.Option(help="Show offboarded records too.")] = False,
) -> None:
    """List clusters in the inventory."""
    parse_selector(selector)  # a bad selector is a usage error before any connection

    async def go() -> None:
        if api_client.configured():  # only the clusters of the caller's teams
            params = {"selector": selector, "include_offboarded": str(include_offboarded)}
            answer = await api_client.ApiClient.from_env().call(
                "GET", "/v1/clusters", params=params
            )
            records = [ClusterRecord.model_validate(r) for r in answer["clusters"]]
        else:
            from starters import inventory

            query = RecordsQuery(selector=selector, include_offboarded=include_offboarded)
            records = await inventory.list_clusters(await _client(), query)
        records = sorted(records, key=lambda r: r.name)
        if output == Output.json:
            print(render.dumps(records))
        else:
            out.print(render.clusters_table(records))

    _run(go)


@clusters_app.command("show")
def clusters_show(
    name: str, output: Annotated[Output, typer.Option("--output", "-o")] = Output.table
) -> None:
    """Show one cluster's record."""

    async def go() -> None:
        if api_client.configured():
            path = f"/v1/clusters/{quote(name, safe='')}"
            record = ClusterRecord.model_validate(
                await api_client.ApiClient.from_env().call("GET", path)
            )
        else:
            record = await _get_cluster(await _client(), name)
        if output == Output.json:
            print(render.dumps(record))
        else:
            out.print(render.cluster_detail(record))

    _run(go)


@clusters_app.command("offboard")
def clusters_offboard(
    name: str,
    wait: Annotated[bool, typer.Option(help="Wait until it finishes.")] = True,
    force: Annotated[
        bool, typer.Option(help="Retire the record even if the cluster cannot be cleaned.")
    ] = False,
) -> None:
    """Offboard a cluster: release it from Flotilla (the cluster itself is untouched)."""

    async def go() -> None:
        from starters import inventory

        if api_client.configured():
            path = f"/v1/clusters/{quote(name, safe='')}/offboard"
            params = {"force": str(force)}
            answer = await api_client.ApiClient.from_env().call("POST", path, params=params)
            out.print(f"started {answer['workflow_id']}")
            return
        client = await _client()
        await _get_cluster(client, name)
        await inventory.offboard(client, name, wait=wait, force=force)
        if wait:
            out.print(f"[green]✓[/green] {name} offboarded", highlight=False)
        else:
            out.print(f"started offboard:{name} (follow: flotilla ops watch offboard:{name})")

    _run(go)


async def _get_cluster(client: Client, name: str) -> ClusterRecord:
    from starters import inventory  # after connecting: a connection error comes first

    record = await inventory.get_cluster(client, name)
    if record is None:
        raise CliError(f"unknown cluster {name!r} (see `flotilla clusters list`)")
    return record


def parse_labels(items: list[str]) -> dict[str, str]:
    """`-l k=v` flags as a dict; anything that is not a valid Kubernetes label is a usage
    error."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        problem = labels_error({key: value}) if sep else "expected key=value"
        if problem:
            raise usage(f"invalid label {item!r}: {problem}")
        labels[key] = value
    return labels


# ---------------------------------------------------------------- ops


@ops_app.command("list")
def ops_list(
    kind: Annotated[
        str, typer.Option(help="Only this kind (onboard, health, rollout:k8s...).")
    ] = "",
    running: Annotated[bool, typer.Option(help="Only running operations.")] = False,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """List operations, newest first."""
    ops.list_query(kind=kind, running=running)  # validates --kind before connecting

    async def go() -> None:
        if api_client.configured():  # the rollouts of the caller's teams
            rows = await _api_operations(kind, running)
        else:
            rows = await ops.list_operations(await _client(), kind=kind, running=running)
        if output == Output.json:
            print(render.dumps(rows))
        else:
            out.print(render.operations_table(rows))

    _run(go)


@ops_app.command("show")
def ops_show(
    workflow_id: Annotated[str, typer.Argument(metavar="ID", help="Workflow id of the operation.")],
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """Show an operation: status, details, progress, pending activities."""

    async def go() -> None:
        if api_client.configured():
            path = f"/v1/operations/{quote(workflow_id, safe=':')}"
            found = await api_client.ApiClient.from_env().call("GET", path)
            op = {"id": found["workflow_id"], "outcome": found["status"], **found}
        else:
            op = await ops.describe_operation(await _client(), workflow_id)
        if output == Output.json:
            print(render.dumps(op))
        else:
            out.print(render.operation_view(op))

    _run(go)


@ops_app.command("watch")
def ops_watch(
    workflow_id: Annotated[str, typer.Argument(metavar="ID", help="Workflow id of the operation.")],
) -> None:
    """Follow an operation live until it ends; exit 1 if it did not succeed."""

    async def go() -> None:
        ops.require_success(await ops.watch_operation(await _client(), workflow_id, console=out))

    _run(go)


async def _api_operations(kind: str, running: bool) -> list[dict[str, Any]]:
    kind = kind.removeprefix("rollout:")
    params = {"kind": kind, "running": str(running)}
    answer = await api_client.ApiClient.from_env().call("GET", "/v1/operations", params=params)
    return [
        {
            "id": op["workflow_id"],
            "kind": op["kind"],
            "outcome": op["status"],
            "started": op["started_at"],
            "closed": op["closed_at"],
        }
        for op in answer["operations"]
    ]


# ---------------------------------------------------------------- plumbing


def _mount_sub_apps() -> None:
    """The rollout helper's commands (`upgrade`, `addon`, `ops pause|resume|...`) and
    `dr`."""
    if any(group.name == "upgrade" for group in app.registered_groups):
        return
    from starters import cli_access, cli_certs, cli_dr, cli_rollout, cli_sync

    cli_certs.mount(app)  # first: `certs renew|rotate` nest in its group
    cli_rollout.mount(app, ops_app)
    cli_dr.mount(app)
    app.add_typer(cli_sync.sync_app, name="sync")
    app.add_typer(cli_sync.drift_app, name="drift")
    app.add_typer(cli_access.admin_app, name="admin")
    app.add_typer(cli_access.audit_app, name="audit")


async def _client() -> Client:
    return await connect()


def _address() -> str:
    from temporalio.envconfig import ClientConfig

    try:
        return str(ClientConfig.load_client_connect_config().get("target_host") or "localhost:7233")
    except Exception:
        return os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error becomes one line and an exit code."""
    _mount_sub_apps()
    command = typer.main.get_command(app)
    args = _hoist_connection_flags(sys.argv[1:] if argv is None else argv, command)
    try:
        result = command.main(args=args, prog_name="flotilla", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        print(exc.format_message())
        _exit(0)
    except UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _fail(f"{exc.format_message()}{hint}", USAGE)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        problem = translate(exc, address=_address())
        if problem is None:
            if os.environ.get("FLOTILLA_DEBUG"):
                traceback.print_exc()
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _fail(
                f"internal error: {type(exc).__name__}: {detail} (FLOTILLA_DEBUG=1: traceback)", 1
            )
        else:
            _fail(problem.message, problem.code)
    _exit(result if isinstance(result, int) else 0)


def _hoist_connection_flags(args: list[str], command: Any) -> list[str]:
    """Moves `--address`/`--namespace` to the front, so they work after any subcommand
    (`flotilla ops list --address host:7233`) as well as before it, unless the subcommand
    declares that option itself (`addon start --namespace` is a Kubernetes namespace).
    `lab` arguments pass through untouched."""
    if "lab" in args[:1]:
        return args
    hoisted = {"--address", "--namespace"} - _own_options(command, args)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in hoisted and ("=" in arg or i + 1 < len(args)):
            if "=" in arg:
                front.append(arg)
            else:
                front += args[i : i + 2]
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _own_options(command: Any, args: list[str]) -> set[str]:
    """Option names declared by the subcommand `args` lead to (not by its parents)."""
    for arg in args:  # options and their values are skipped; subcommand names descend
        subcommands = getattr(command, "commands", {})
        if arg in subcommands:
            command = subcommands[arg]
    if getattr(command, "commands", None):
        return set()  # a group, not a leaf command: nothing of its own to protect
    return {opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", [])}


def _fail(message: str, code: int) -> None:
    sys.stdout.flush()
    print(f"flotilla: {message}", file=sys.stderr)
    _exit(code)


def _exit(code: int) -> None:
    """Flush output and spans, then leave without interpreter finalization: the Temporal
    client's Rust threads can crash a finalizing interpreter (SIGSEGV / PyGILState_Release,
    temporalio/sdk-python#300), which would turn a success into a crash."""
    if os.environ.get("FLOTILLA_TRACING"):
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
