"""Terminal output: rich tables for people, `-o json` for scripts.

Everything here is pure (data in, rich renderables or text out), so it is tested without a
server. Progress rendering is generic: any pydantic model a workflow's `progress` query
returns is shown as its scalar fields, then one table per list of records; a `waves` list
becomes one table with a wave column, and a `clusters` mapping one table keyed by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleet.models import ClusterRecord

STATUS_STYLE = {
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "TERMINATED": "red",
    "TIMED_OUT": "red",
    "CANCELED": "yellow",
    "CONTINUED_AS_NEW": "dim",
    "healthy": "green",
    "degraded": "yellow",
    "unreachable": "red",
    "succeeded": "green",
    "completed-with-skips": "yellow",
    "halted": "red",
    "aborted": "red",
    "rolled-back": "yellow",
    "canceled": "yellow",
    "terminated": "red",
    "timed-out": "red",
    "failed": "red",
    "running": "cyan",
    "pending": "dim",
    "skipped": "yellow",
    "expiring": "yellow",
    "expired": "red",
}


def to_jsonable(value: Any) -> Any:
    """Pydantic models, enums and datetimes as plain JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=True)


def styled(value: Any) -> Text:
    text = cell(value)
    return Text(text, style=STATUS_STYLE.get(text, ""))


def cell(value: Any) -> str:
    """A compact one-cell representation of any JSON-like value."""
    value = to_jsonable(value)
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        return value[:19].replace("T", " ")  # ISO timestamp, to the second
    if isinstance(value, Mapping):
        return ",".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) or "-"
    return str(value)


def clusters_table(records: Sequence[ClusterRecord]) -> Table:
    table = Table(title=f"{len(records)} cluster(s)", title_justify="left")
    for column in ("NAME", "ENV", "REGION", "VERSION", "NODES", "HEALTH", "PHASE", "LOCK", "CERTS"):
        table.add_column(column)
    for r in records:
        certs = r.certs
        soonest = f" {certs.soonest:%Y-%m-%d}" if certs and certs.soonest else ""
        table.add_row(
            r.name,
            r.labels.get("env", "-"),
            r.labels.get("region", "-"),
            r.version or "-",
            str(r.node_count),
            styled(r.health),
            styled(r.phase),
            r.lock.holder if r.lock else "-",
            Text(f"{certs.status}{soonest}", style=STATUS_STYLE.get(certs.status, ""))
            if certs
            else "-",
        )
    return table


def cluster_detail(record: ClusterRecord) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    data = record.model_dump(mode="json")
    data["credential"] = f"{record.credential.kind}: context {record.credential.context}" + (
        f" in {record.credential.kubeconfig}" if record.credential.kubeconfig else ""
    )
    if record.management:
        m = record.management
        data["management"] = f"{m.credential.context} namespace {m.namespace} cluster {m.cluster}"
    for key, value in data.items():
        table.add_row(key, styled(value) if key in ("health", "phase") else cell(value))
    return table


def operations_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    rows = list(rows)
    table = Table(title=f"{len(rows)} operation(s)", title_justify="left")
    for column in ("ID", "KIND", "OUTCOME", "STARTED", "CLOSED", "CLUSTERS"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            cell(row.get("kind")),
            styled(row["outcome"]),
            cell(row.get("started")),
            cell(row.get("closed")),
            cell(row.get("clusters")),
        )
    return table


def operation_view(op: Mapping[str, Any]) -> RenderableType:
    """An operation as `ops show`/`ops watch` display it: header, progress, activities."""
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    for key in ("id", "type", "kind", "outcome", "started", "closed", "summary", "details"):
        if op.get(key):
            header.add_row(key, styled(op[key]) if key == "outcome" else cell(op[key]))
    if op.get("clusters"):
        header.add_row("clusters", cell(op["clusters"]))
    parts: list[RenderableType] = [header]
    if op.get("progress") is not None:
        parts.append(progress_view(op["progress"]))
    if op.get("pending_activities"):
        parts.append(records_table("pending activities", op["pending_activities"]))
    if op.get("failure"):
        parts.append(Text(f"failure: {op['failure']}", style="red"))
    if op.get("result") is not None:
        parts.append(Text(f"result: {cell(op['result'])}"))
    return Group(*parts)


def progress_view(progress: Any) -> RenderableType:
    """Generic rendering of a `progress` query result (any JSON-like shape)."""
    data = to_jsonable(progress)
    if not isinstance(data, Mapping):
        return Text(f"progress: {cell(data)}")
    scalars = Table.grid(padding=(0, 2))
    scalars.add_column(style="bold")
    scalars.add_column()
    tables: list[RenderableType] = []
    for key, value in data.items():
        if key == "waves" and _is_records(value):
            tables.append(_waves_table(value))
        elif (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, Mapping) for v in value.values())
        ):
            tables.append(records_table(key, [{"name": k, **v} for k, v in value.items()]))
        elif _is_records(value) and value:
            tables.append(records_table(key, value))
        else:
            scalars.add_row(key, styled(value))
    return Group(scalars, *tables)


def records_table(title: str, rows: Sequence[Mapping[str, Any]]) -> Table:
    """A table whose columns are the union of the rows' keys, in first-seen order; columns
    empty in every row are left out, image references lose their registry path, and
    timestamps lose their date and year where every row shares it, so wide progress records
    still fit a terminal."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k not in _HIDDEN_COLUMNS]
    cells = [{c: _short_image(cell(row.get(c))) for c in columns} for row in rows]
    columns = [c for c in columns if any(r[c] != "-" for r in cells)]
    dates = {v[:10] for r in cells for v in r.values() if _is_timestamp_cell(v)}
    cut = 11 if len(dates) == 1 else 5  # drop "YYYY-MM-DD " or just "YYYY-"
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for r in cells:
        table.add_row(
            *(
                Text(v[cut:] if _is_timestamp_cell(v) else v, style=STATUS_STYLE.get(v, ""))
                for v in (r[c] for c in columns)
            )
        )
    return table


# Columns that only repeat what the table's context already says.
_HIDDEN_COLUMNS = {"index"}


def _short_image(text: str) -> str:
    """`registry.k8s.io/coredns/coredns:v1.11.4` -> `coredns:v1.11.4`; other text as is."""
    if "/" in text and ":" in text.rsplit("/", 1)[1] and " " not in text:
        return text.rsplit("/", 1)[1]
    return text


def _is_timestamp_cell(text: str) -> bool:
    return len(text) == 19 and text[4] == "-" and text[10] == " " and text[13] == ":"


def _waves_table(waves: Sequence[Mapping[str, Any]]) -> Table:
    rows: list[dict[str, Any]] = []
    for index, wave in enumerate(waves):
        label = wave.get("name", index)
        clusters = wave.get("clusters")
        if isinstance(clusters, Mapping):
            clusters = [
                {"name": k, **v} if isinstance(v, Mapping) else {"name": k, "state": v}
                for k, v in clusters.items()
            ]
        if _is_records(clusters) and clusters:
            rows += [{"wave": label, **c} for c in clusters]
        else:
            rows.append({"wave": label, **{k: v for k, v in wave.items() if k != "name"}})
    return records_table("waves", rows)


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, Mapping) for v in value)
