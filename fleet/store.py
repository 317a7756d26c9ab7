"""Flotilla's own database: the audit trail and the API tokens. SQLite by default (a file
under the state directory), PostgreSQL when FLOTILLA_DATABASE_URL is a `postgresql://`
URL (psycopg 3). It outlives Temporal's retention: nothing here is in workflow history.

Audit records are append-only (triggers refuse UPDATE and DELETE) and numbered without
gaps: an append takes a table lock, reads the last number and writes the next one in one
transaction. Tokens are stored as SHA-256 of their random secret (256 bits, so a plain
hash suffices); a token is shown once, at creation. Calls are blocking: async callers use
`asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fleet.audit import AuditEntry, AuditRecord

DATABASE_ENV = "FLOTILLA_DATABASE_URL"
TOKEN_PREFIX = "flt_"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS flotilla_audit (
        seq BIGINT PRIMARY KEY, at TEXT NOT NULL, principal TEXT NOT NULL,
        action TEXT NOT NULL, target TEXT NOT NULL, result TEXT NOT NULL,
        detail TEXT NOT NULL, key TEXT UNIQUE, workflow_id TEXT NOT NULL,
        clusters TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS flotilla_audit_at ON flotilla_audit (at)",
    """CREATE TABLE IF NOT EXISTS flotilla_tokens (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, groups TEXT NOT NULL,
        hash TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)""",
]
_SQLITE_GUARDS = [
    f"""CREATE TRIGGER IF NOT EXISTS flotilla_audit_no_{verb.lower()}
        BEFORE {verb} ON flotilla_audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"""
    for verb in ("UPDATE", "DELETE")
]
_POSTGRES_GUARDS = [
    """CREATE OR REPLACE FUNCTION flotilla_audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$""",
    """DO $$ BEGIN
        CREATE TRIGGER flotilla_audit_append_only BEFORE UPDATE OR DELETE
            ON flotilla_audit FOR EACH ROW EXECUTE FUNCTION flotilla_audit_append_only();
        EXCEPTION WHEN duplicate_object THEN NULL; END $$""",
]
_COLUMNS = "seq, at, principal, action, target, result, detail, key, workflow_id, clusters"


class StoreError(Exception):
    """The database cannot be reached or set up; the message names it without password."""


class TokenInfo(BaseModel):
    id: str
    name: str  # the principal the token authenticates as
    groups: list[str] = Field(default_factory=list)
    created_at: datetime
    revoked_at: datetime | None = None


def database_url(env: dict[str, str], state_dir: Path) -> str:
    return env.get(DATABASE_ENV, "") or str(state_dir / "flotilla.sqlite")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


class Store:
    """One database connection (SQLite or PostgreSQL), used from one thread at a time."""

    def __init__(self, url: str):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._lock = threading.Lock()
        try:
            self._conn: Any = self._connect()
            self._setup()
        except Exception as exc:  # driver errors differ; the message is what matters
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot open database {redact(url)}: {first[:200]}") from None

    def _connect(self) -> Any:
        if self.postgres:
            import psycopg

            return psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        Path(self.url).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.url, timeout=30, check_same_thread=False)
        conn.isolation_level = None  # explicit BEGIN IMMEDIATE below
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            if self.postgres and (self._conn.closed or self._conn.broken):
                self._conn = self._connect()  # the server restarted: reconnect once
            cur = self._conn.cursor()
            if not self.postgres:
                cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()

    def _setup(self) -> None:
        with self._tx() as cur:
            for statement in _SCHEMA + (_POSTGRES_GUARDS if self.postgres else _SQLITE_GUARDS):
                cur.execute(statement)

    def close(self) -> None:
        self._conn.close()

    # ---------------------------------------------------------------- audit

    def append(self, entry: AuditEntry) -> int:
        """Appends and returns the record's number; an entry whose `key` is already
        recorded is not appended again (its number is returned)."""
        with self._tx() as cur:
            if self.postgres:
                cur.execute("LOCK TABLE flotilla_audit IN SHARE ROW EXCLUSIVE MODE")
            if entry.key:
                cur.execute(self._sql("SELECT seq FROM flotilla_audit WHERE key = ?"), (entry.key,))
                found = cur.fetchone()
                if found:
                    return int(found[0])
            cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM flotilla_audit")
            seq = int(cur.fetchone()[0])
            cur.execute(
                self._sql(
                    f"INSERT INTO flotilla_audit ({_COLUMNS}) VALUES ({', '.join('?' * 10)})"
                ),
                (
                    seq,
                    entry.at.astimezone(UTC).isoformat(),
                    entry.principal,
                    entry.action,
                    entry.target,
                    entry.result,
                    entry.detail,
                    entry.key or None,
                    entry.workflow_id,
                    json.dumps(entry.clusters, sort_keys=True),
                ),
            )
            return seq

    def records(self, *, since: datetime | None = None, limit: int = 0) -> list[AuditRecord]:
        """Records in sequence order, from `since` on; the last `limit` when limit > 0."""
        where, args = "", tuple[str, ...]()
        if since is not None:
            where, args = "WHERE at >= ?", (since.astimezone(UTC).isoformat(),)
        order = "DESC" if limit else "ASC"
        tail = f" LIMIT {int(limit)}" if limit else ""
        with self._tx() as cur:
            cur.execute(
                self._sql(f"SELECT {_COLUMNS} FROM flotilla_audit {where} ORDER BY seq {order}")
                + tail,
                args,
            )
            rows = cur.fetchall()
        found = [_record(row) for row in rows]
        return sorted(found, key=lambda r: r.seq)

    # ---------------------------------------------------------------- tokens

    def create_token(self, name: str, groups: list[str]) -> tuple[TokenInfo, str]:
        """A new token for principal `name`; returns its info and the secret (shown once)."""
        token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        info = TokenInfo(id=token_id, name=name, groups=groups, created_at=datetime.now(UTC))
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO flotilla_tokens (id, name, groups, hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)"
                ),
                (token_id, name, json.dumps(groups), _hash(secret), info.created_at.isoformat()),
            )
        return info, f"{TOKEN_PREFIX}{token_id}.{secret}"

    def tokens(self) -> list[TokenInfo]:
        with self._tx() as cur:
            cur.execute(
                "SELECT id, name, groups, created_at, revoked_at FROM flotilla_tokens "
                "ORDER BY created_at"
            )
            return [_token(row) for row in cur.fetchall()]

    def verify_token(self, token: str) -> TokenInfo | None:
        """The live token's info, None for an unknown, malformed or revoked token."""
        token_id, _, secret = token.removeprefix(TOKEN_PREFIX).partition(".")
        if not token.startswith(TOKEN_PREFIX) or not token_id or not secret:
            return None
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, name, groups, created_at, revoked_at, hash "
                    "FROM flotilla_tokens WHERE id = ?"
                ),
                (token_id,),
            )
            row = cur.fetchone()
        if row is None or not hmac.compare_digest(row[5], _hash(secret)):
            return None
        info = _token(row[:5])
        return None if info.revoked_at else info

    def revoke_token(self, token_id: str) -> TokenInfo | None:
        """Revokes by id (idempotent); None when there is no such token."""
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE flotilla_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"
                ),
                (datetime.now(UTC).isoformat(), token_id),
            )
            cur.execute(
                self._sql(
                    "SELECT id, name, groups, created_at, revoked_at FROM flotilla_tokens "
                    "WHERE id = ?"
                ),
                (token_id,),
            )
            row = cur.fetchone()
        return _token(row) if row else None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(row: Any) -> AuditRecord:
    names = _COLUMNS.split(", ")
    data = dict(zip(names, row, strict=True))
    data["key"] = data["key"] or ""
    data["clusters"] = json.loads(data["clusters"])
    return AuditRecord.model_validate(data)


def _token(row: Any) -> TokenInfo:
    token_id, name, groups, created_at, revoked_at = row
    return TokenInfo(
        id=token_id,
        name=name,
        groups=json.loads(groups),
        created_at=created_at,
        revoked_at=revoked_at,
    )
