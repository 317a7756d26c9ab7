"""`flotilla admin token ...` and `flotilla audit ...`: API tokens and the audit trail.

Through the API when FLOTILLA_API is set (the admin role is needed), else straight on
the database (FLOTILLA_DATABASE_URL, or the SQLite file under FLOTILLA_STATE_DIR): that
is for the admins who run the API and hold its database.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from fleet import audit
from fleet.audit import AuditRecord
from fleet.config import Settings
from fleet.durations import parse_duration
from fleet.selectors import parse_selector
from fleet.store import Store, StoreError, TokenInfo, database_url
from starters import api_client
from starters.errors import CliError, usage

T = TypeVar("T")
admin_app = typer.Typer(help="Administration: API tokens.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)
admin_app.add_typer(token_app, name="token")
audit_app = typer.Typer(help="The audit trail (docs/access.md).", no_args_is_help=True)
out = Console()


def _store() -> Store:
    try:
        return Store(database_url(dict(os.environ), Settings.from_env().state_dir))
    except StoreError as exc:
        raise CliError(str(exc)) from None


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def _api(method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    client = api_client.ApiClient.from_env()
    return _run(lambda: client.call(method, path, body, **kwargs))


# ---------------------------------------------------------------- tokens


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="The principal the token authenticates as.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="A group (repeat); roles by policy.")
    ] = None,
) -> None:
    """Create an API token and print it once (only its hash is kept)."""
    groups = list(group or [])
    if api_client.configured():
        answer = _api("POST", "/v1/admin/tokens", {"name": name, "groups": groups})
        info, token = TokenInfo.model_validate(answer["info"]), str(answer["token"])
    else:
        from starters.api_models import TokenCreateBody

        try:
            TokenCreateBody(name=name, groups=groups)
        except ValueError:
            raise usage(f"bad token name {name[:100]!r}: letters, digits, '@._:-'") from None
        info, token = _store().create_token(name, groups)
    print(token)
    print(f"token {info.id} for {info.name}: keep it now, it is not shown again", file=sys.stderr)


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    if api_client.configured():
        tokens = [TokenInfo.model_validate(t) for t in _api("GET", "/v1/admin/tokens")["tokens"]]
    else:
        tokens = _store().tokens()
    table = Table(title=f"{len(tokens)} token(s)", title_justify="left")
    for column in ("ID", "NAME", "GROUPS", "CREATED", "REVOKED"):
        table.add_column(column)
    for t in tokens:
        revoked = f"{t.revoked_at:%F %T}" if t.revoked_at else ""
        table.add_row(t.id, t.name, ",".join(t.groups), f"{t.created_at:%F %T}", revoked)
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id.")]) -> None:
    """Revoke a token: the API refuses it from its next call on."""
    if api_client.configured():
        _api("POST", f"/v1/admin/tokens/{token_id}/revoke")
    elif _store().revoke_token(token_id) is None:
        raise CliError(f"no token with id {token_id!r} (see `flotilla admin token list`)")
    out.print(f"token {token_id} revoked")


# ---------------------------------------------------------------- audit

Since = Annotated[
    str,
    typer.Option(help="From this time on: an ISO date-time or a duration back (24h, 7d)."),
]
Selector = Annotated[
    str, typer.Option("--selector", "-l", help="Only records about clusters it matches.")
]


def _since(text: str) -> datetime | None:
    if not text:
        return None
    try:
        found = datetime.fromisoformat(text)
        return found if found.tzinfo else found.replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        raise usage(f"--since {text!r}: give an ISO date-time or a duration like 24h") from None


def _records(since: str, selector: str) -> list[AuditRecord]:
    start = _since(since)
    parsed = parse_selector(selector) if selector else None  # a usage error before any call
    if api_client.configured():
        params = {"since": start.isoformat()} if start else None
        answer = _api("GET", "/v1/audit", params=params)
        records = [AuditRecord.model_validate(r) for r in answer["records"]]
    else:
        records = _store().records(since=start)
    return audit.matching(records, parsed) if parsed else records


@audit_app.command("list")
def audit_list(since: Since = "", selector: Selector = "") -> None:
    """Show audit records, oldest first."""
    records = _records(since, selector)
    table = Table(title=f"{len(records)} record(s)", title_justify="left")
    for column in ("SEQ", "AT", "PRINCIPAL", "ACTION", "TARGET", "RESULT", "DETAIL"):
        table.add_column(column, overflow="fold")
    for r in records:
        at = f"{r.at:%F %T}"
        table.add_row(str(r.seq), at, r.principal, r.action, r.target, r.result, r.detail)
    out.print(table)


@audit_app.command("export")
def audit_export(
    since: Since = "",
    selector: Selector = "",
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
) -> None:
    """Write audit records to stdout (jsonl or csv), sequence numbers included."""
    if fmt not in audit.FORMATS:
        raise usage(f"--format {fmt!r}: one of {', '.join(audit.FORMATS)}")
    for line in audit.export(_records(since, selector), fmt):
        sys.stdout.write(line)


@audit_app.command("verify")
def audit_verify(
    path: Annotated[Path, typer.Argument(help="An export (jsonl or csv); - for stdin.")],
) -> None:
    """Check an unfiltered export for missing records (gaps in the sequence numbers)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise usage(f"cannot read {path}: {exc.strerror}") from None
    try:
        records = audit.read_export(text)
    except ValueError as exc:
        raise usage(f"{path}: {exc}") from None
    if not records:
        raise CliError(f"{path}: no records")
    gaps = audit.check_gaps(records)
    span = f"{len(records)} records, seq {records[0].seq}..{records[-1].seq}"
    if gaps:
        listed = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in gaps[:10])
        raise CliError(f"{path}: {span}: missing {listed}")
    out.print(f"{path}: {span}, no gaps")
