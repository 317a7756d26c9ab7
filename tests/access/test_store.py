"""The audit store and API tokens on SQLite and on a real PostgreSQL server: numbering
without gaps, append-only, idempotent event keys, hashed tokens, exports and gap checks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleet import audit
from fleet.audit import AuditEntry
from fleet.selectors import parse_selector
from fleet.store import Store, StoreError, redact


def entry(n: int, **kw: object) -> AuditEntry:
    fields: dict[str, object] = {
        "at": datetime.now(UTC),
        "principal": f"p{n}",
        "action": "rollouts.start",
        "result": "ok",
        **kw,
    }
    return AuditEntry.model_validate(fields)


def exercise(store: Store) -> None:
    """What both backends must do alike."""
    before = len(store.records())
    first = store.append(entry(1, clusters={"a": {"env": "prod"}}, workflow_id="rollout:x:1"))
    second = store.append(entry(2, key="rollout:x:1/1", workflow_id="rollout:x:1"))
    assert second == first + 1
    assert store.append(entry(3, key="rollout:x:1/1")) == second  # delivered twice: once
    third = store.append(entry(4, clusters={"b": {"env": "dev"}}))
    records = store.records()
    assert [r.seq for r in records[before:]] == [first, second, third]
    assert audit.check_gaps(records) == []
    assert [r.principal for r in records[before:]] == ["p1", "p2", "p4"]
    assert store.records(limit=1)[0].seq == third
    assert store.records(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    prod = audit.matching(records[before:], parse_selector("env=prod"))
    assert [r.principal for r in prod] == ["p1", "p2"]  # the event of that run comes along

    info, token = store.create_token("alice", ["sre"])
    assert token.startswith("flt_") and info.name == "alice"
    assert store.verify_token(token) == info
    assert store.verify_token(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert store.verify_token("flt_nothing.here") is None
    assert all(token.split(".")[1] not in repr(t) for t in store.tokens())
    revoked = store.revoke_token(info.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert store.verify_token(token) is None
    assert store.revoke_token("nope") is None


def test_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    store = Store(str(path))
    exercise(store)
    store.close()
    # Append-only: the database itself refuses to change or drop a record.
    raw = sqlite3.connect(path)
    for statement in ("UPDATE flotilla_audit SET principal = 'x'", "DELETE FROM flotilla_audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(statement)
    raw.close()
    assert len(Store(str(path)).records()) == 3  # reopened: all there


def test_postgres_store(postgres_url: str) -> None:
    import psycopg

    store = Store(postgres_url)
    exercise(store)
    store.close()
    with psycopg.connect(postgres_url) as conn:
        for statement in (
            "UPDATE flotilla_audit SET principal = 'x'",
            "DELETE FROM flotilla_audit",
        ):
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute(statement)
            conn.rollback()
    # The server drops the connection (a restart): one call fails, the next reconnects.
    store = Store(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    with pytest.raises(psycopg.Error):
        store.records()
    assert len(store.records()) >= 3
    store.close()


def test_an_unreachable_database_is_one_line_without_password() -> None:
    with pytest.raises(StoreError) as caught:
        Store("postgresql://flotilla:s3cret@127.0.0.1:1/audit")
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_exports_round_trip_and_gaps_are_found() -> None:
    now = datetime.now(UTC)
    records = [
        audit.AuditRecord(seq=n, at=now, principal="p", action="a", result="ok")
        for n in (1, 2, 3, 6)
    ]
    for fmt in audit.FORMATS:
        text = "".join(audit.export(records, fmt))
        again = audit.read_export(text)
        assert again == records, fmt
        assert audit.check_gaps(again) == [(4, 5)]
    with pytest.raises(ValueError, match="line 1"):
        audit.read_export("{nope\n")
