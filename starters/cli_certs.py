"""`flotilla certs list|show|scan`: the fleet's certificate inventory (docs/certificates.md).

`renew` and `rotate` (plan|start) are rollouts: cli_rollout.py mounts them in this group
from the operation registry. Mistakes raise CliError (usage: exit 2), so `starters.cli.main`
prints one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, TypeVar
from urllib.parse import quote

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.inventory import LIST_CONCURRENCY
from fleet.certs import CertScanRequest, CertScanResult, parse_threshold, remaining, short
from fleet.certs_models import CertEntry, CertReport, CertStatus
from fleet.config import Settings
from fleet.connect import connect
from fleet.ids import cluster_id
from fleet.models import RecordsQuery
from fleet.selectors import parse_selector
from starters import api_client, render
from starters.errors import CliError, usage
from workflows.certs import CertScan

certs_app = typer.Typer(
    help="Certificates across the fleet: inventory, renewal, CA rotation.", no_args_is_help=True
)
out = Console()
T = TypeVar("T")

Selector = Annotated[
    str, typer.Option("--selector", "-l", help="Label selector, e.g. env=prod,region in (eu,us).")
]


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o")]


def mount(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")


def _threshold(text: str, flag: str) -> float:
    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise usage(f"{flag}: {exc}") from None


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


async def _report(client: Client, name: str) -> CertReport | None:
    try:
        found = await client.get_workflow_handle(cluster_id(name)).query("cert_report")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"unknown cluster {name!r} (see `flotilla clusters list`)") from None
        raise
    return None if found is None else CertReport.model_validate(found)


async def _reports(selector: str) -> tuple[list[CertReport], list[str]]:
    """Every (visible) cluster's last report, and the clusters never scanned; through the
    API when FLOTILLA_API is set."""
    if api_client.configured():
        answer = await api_client.ApiClient.from_env().call(
            "GET", "/v1/certs", params={"selector": selector}
        )
        reports = [CertReport.model_validate(r) for r in answer["reports"]]
        return reports, list(answer["unscanned"])
    from starters.inventory import list_clusters

    client = await connect()
    records = await list_clusters(client, RecordsQuery(selector=selector))
    gate = asyncio.Semaphore(LIST_CONCURRENCY)

    async def report(name: str) -> CertReport | None:
        async with gate:
            return await _report(client, name)

    found = await asyncio.gather(*(report(r.name) for r in records))
    unscanned = [r.name for r, rep in zip(records, found, strict=True) if rep is None]
    return [r for r in found if r is not None], unscanned


@certs_app.command("list")
def certs_list(
    expiring: Annotated[
        str, typer.Option(help="Only certificates expiring within this: 30d, 12h.")
    ] = "",
    selector: Selector = "",
    output: OutputOption = Output.table,
) -> None:
    """Every certificate the last scan found, soonest first (from the inventory)."""
    within = _threshold(expiring, "--expiring") if expiring else None
    parse_selector(selector)

    async def go() -> None:
        reports, unscanned = await _reports(selector)
        now = datetime.now(UTC)
        rows: list[tuple[str, CertEntry]] = [
            (report.cluster, entry)
            for report in reports
            for entry in report.entries
            if within is None or entry.not_after <= now + timedelta(seconds=within)
        ]
        rows.sort(key=lambda row: row[1].not_after)
        if output == Output.json:
            print(render.dumps([{"cluster": c, **e.model_dump(mode="json")} for c, e in rows]))
            return
        title = f"{len(rows)} certificate(s)" + (f" expiring within {expiring}" if expiring else "")
        table = Table(title=title, title_justify="left")
        for column in ("CLUSTER", "SOURCE", "NAME", "NOT AFTER", "EXPIRES", "FINGERPRINT"):
            table.add_column(column)
        for cluster, e in rows:
            when = remaining(e.not_after, now)
            style = "red" if e.not_after <= now else "yellow" if within else ""
            table.add_row(
                cluster,
                e.source.value,
                e.name,
                f"{e.not_after:%Y-%m-%d %H:%M}",
                Text(when, style=style),
                short(e.fingerprint) or "-",
            )
        out.print(table)
        if unscanned:
            out.print(f"never scanned: {', '.join(unscanned)} (run `flotilla certs scan`)")

    _run(go)


@certs_app.command("show")
def certs_show(
    cluster: Annotated[str, typer.Argument(help="Cluster name.")],
    output: OutputOption = Output.table,
) -> None:
    """One cluster's certificates, trust map (which consumer pins which CA) and problems."""

    async def go() -> None:
        if api_client.configured():
            path = f"/v1/certs/{quote(cluster, safe='')}"
            found = await api_client.ApiClient.from_env().call("GET", path)
            report: CertReport | None = CertReport.model_validate(found)
        else:
            report = await _report(await connect(), cluster)
        if report is None:
            raise CliError(f"{cluster} was never scanned: run `flotilla certs scan {cluster}`")
        if output == Output.json:
            print(report.model_dump_json(indent=2))
            return
        now = datetime.now(UTC)
        out.print(f"[bold]{cluster}[/bold]: scanned {report.scanned_at:%Y-%m-%d %H:%M:%S} UTC")
        table = Table(title="certificates", title_justify="left")
        for column in ("SOURCE", "NAME", "NOT AFTER", "EXPIRES", "ISSUER", "FINGERPRINT"):
            table.add_column(column)
        for e in sorted(report.entries, key=lambda e: e.not_after):
            table.add_row(
                e.source.value,
                e.name,
                f"{e.not_after:%Y-%m-%d %H:%M}",
                remaining(e.not_after, now),
                e.issuer or "-",
                short(e.fingerprint) or "-",
            )
        out.print(table)
        trust = Table(title="trust map", title_justify="left")
        trust.add_column("CONSUMER")
        trust.add_column("TRUSTS (CA fingerprints)")
        for pin in report.trust:
            marked = [
                f"{short(fp)}{' (signs the API server)' if fp == report.serving_ca else ''}"
                for fp in pin.cas
            ]
            trust.add_row(pin.consumer, ", ".join(marked) or "-")
        out.print(trust)
        if report.hub_accepts is not None:
            out.print(f"hub handshake: {'verified' if report.hub_accepts else 'FAILS'}")
        for problem in report.problems:
            out.print(f"[yellow]problem:[/yellow] {problem}")

    _run(go)


@certs_app.command("scan")
def certs_scan(
    clusters: Annotated[
        list[str] | None, typer.Argument(help="Clusters to scan (default: all, or -l).")
    ] = None,
    selector: Selector = "",
    alert: Annotated[
        str, typer.Option(help="Mark clusters with anything expiring within this.")
    ] = "60d",
    wait: Annotated[bool, typer.Option(help="Wait and print what was found.")] = True,
    output: OutputOption = Output.table,
) -> None:
    """Scan certificates now (the `flotilla-cert-scan` schedule also does, every
    FLOTILLA_CERT_SCAN_INTERVAL seconds) and record them on the cluster records."""
    alert_seconds = _threshold(alert, "--alert")
    parse_selector(selector)
    names = list(dict.fromkeys(clusters or []))
    if names and selector:
        raise usage("name clusters or give -l, not both")

    async def go() -> None:
        from starters.inventory import get_cluster

        client = await connect()
        for name in names:  # refused before anything starts
            if await get_cluster(client, name) is None:
                raise CliError(f"unknown cluster {name!r} (see `flotilla clusters list`)")
        request = CertScanRequest(names=names, selector=selector, alert_seconds=alert_seconds)
        handle = await client.start_workflow(
            CertScan.run,
            request,
            id=f"certscan:{datetime.now(UTC):%Y%m%d-%H%M%S-%f}",
            task_queue=Settings.from_env().task_queue,
            static_summary=f"Certificate scan of {', '.join(names) or selector or 'the fleet'}",
        )
        if not wait:
            out.print(f"started {handle.id} (follow: flotilla ops watch {handle.id})")
            return
        result = await _follow(handle)
        if output == Output.json:
            print(result.model_dump_json(indent=2))
        else:
            out.print(scan_table(result))
        if result.failed or result.missing:
            raise CliError(
                f"{len(result.failed) + len(result.missing)} cluster(s) not scanned: "
                + "; ".join([*(f"{c}: {w}" for c, w in result.failed.items()), *result.missing])
            )

    _run(go)


async def _follow(handle: WorkflowHandle[CertScan, CertScanResult]) -> CertScanResult:
    """The result, with a live line of progress while it runs."""
    task = asyncio.ensure_future(handle.result())
    with Live(Text(f"{handle.id}: starting"), console=out, transient=True) as live:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            try:
                p = await handle.query(CertScan.progress)
            except RPCError:
                continue
            done = len(p.clusters) + len(p.failed)
            live.update(Text(f"{handle.id}: {done} cluster(s) scanned"))
    return task.result()


def scan_table(result: CertScanResult) -> Table:
    now = datetime.now(UTC)
    counts = ", ".join(f"{result.count(s)} {s.value}" for s in CertStatus if result.count(s))
    table = Table(title=f"{len(result.clusters)} cluster(s): {counts}", title_justify="left")
    for column in ("CLUSTER", "STATUS", "SOONEST", "EXPIRES", "SOURCE", "PROBLEMS"):
        table.add_column(column)
    for name, s in result.clusters.items():
        table.add_row(
            name,
            render.styled(s.status.value),
            f"{s.soonest:%Y-%m-%d %H:%M}" if s.soonest else "-",
            remaining(s.soonest, now) if s.soonest else "-",
            s.source or "-",
            str(s.problems) + (" (unreachable)" if name in result.unreachable else ""),
        )
    return table
