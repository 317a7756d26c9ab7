"""The audit trail's records and their export: pure code (the store is fleet/store.py).

A record is one API call (principal, action, target, result) or one operation event.
Records are numbered 1, 2, 3... by the store with no gaps, so an export can be checked
for missing records (`check_gaps`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from pydantic import BaseModel, Field, ValidationError

from fleet.selectors import Selector

FORMATS = ("jsonl", "csv")
CSV_FIELDS = (
    "seq",
    "at",
    "principal",
    "action",
    "target",
    "result",
    "detail",
    "key",
    "workflow_id",
    "clusters",
)


class AuditEntry(BaseModel):
    """What is appended. `key` (an operation event's idempotency key) makes an append
    idempotent; `clusters` maps the clusters concerned to their labels when known."""

    at: datetime
    principal: str
    action: str  # e.g. rollouts.start, operations.approve, event.wave_approved
    target: str = ""
    result: str  # ok | denied | refused | error | the event's outcome
    detail: str = ""
    key: str = ""
    workflow_id: str = ""
    clusters: dict[str, dict[str, str]] = Field(default_factory=dict)


class AuditRecord(AuditEntry):
    seq: int


def matching(records: list[AuditRecord], selector: Selector) -> list[AuditRecord]:
    """Records concerning a cluster the selector matches, plus every record of a run
    (same workflow id) that did: operation events name clusters without their labels."""
    direct = {r.seq for r in records if any(selector.matches(lbl) for lbl in r.clusters.values())}
    runs = {r.workflow_id for r in records if r.seq in direct and r.workflow_id}
    return [r for r in records if r.seq in direct or r.workflow_id in runs]


def export(records: Iterable[AuditRecord], fmt: str) -> Iterator[str]:
    """Lines of a jsonl or csv export (csv: a header first; clusters as JSON)."""
    if fmt == "jsonl":
        for record in records:
            yield record.model_dump_json() + "\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = record.model_dump(mode="json")
        row["clusters"] = json.dumps(row["clusters"], sort_keys=True)
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def read_export(text: str) -> list[AuditRecord]:
    """Parses a jsonl or csv export; ValueError naming the first bad line."""
    lines = text.splitlines()
    if not lines:
        return []
    if lines[0].startswith("seq,"):
        rows: list[dict[str, object]] = list(csv.DictReader(io.StringIO(text)))
        for row in rows:
            row["clusters"] = json.loads(str(row["clusters"] or "{}"))
    else:
        rows = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise ValueError(f"line {number} is not JSON") from None
    try:
        return [AuditRecord.model_validate(row) for row in rows]
    except ValidationError as exc:
        raise ValueError(f"not an audit export: {exc.errors()[0]['msg']}") from None


def check_gaps(records: list[AuditRecord]) -> list[tuple[int, int]]:
    """Missing sequence ranges (first, last) between the export's first and last record;
    [] when the export is complete. Duplicates or disorder count as a gap at that point."""
    gaps = []
    for before, after in zip(records, records[1:], strict=False):
        if after.seq != before.seq + 1:
            gaps.append((before.seq + 1, after.seq - 1))
    return gaps
