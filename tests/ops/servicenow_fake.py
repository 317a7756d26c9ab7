"""A local stand-in for a ServiceNow instance's Table API, strict the way the real one is
where Flotilla depends on it: basic auth (401 with ServiceNow's error body otherwise),
JSON only, `change_request` found by encoded query, `PATCH` by sys_id (404 for an unknown
one), `state` limited to the change model's values, and every `work_notes` write kept as
a `sys_journal_field` row that can be searched with `valueLIKE`.

Faults: each distinct note is refused once with 503 before it is written, then written
but answered with 500 (the answer is lost), so a client without an idempotency check
writes it twice.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

STATES = {"-5", "-4", "-3", "-2", "-1", "0", "3", "4"}  # change_request state choices
FIELDS = {"work_notes", "state"}  # what Flotilla may write


def _error(status: int, message: str, detail: str = "") -> web.Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return web.json_response(body, status=status)


def _query(text: str) -> list[tuple[str, str, str]]:
    """An encoded query's `field=value` and `fieldLIKEvalue` terms, joined by ^."""
    terms = []
    for term in text.split("^"):
        if "LIKE" in term and ("=" not in term or term.index("LIKE") < term.index("=")):
            name, _, value = term.partition("LIKE")
            terms.append((name, "LIKE", value))
        else:
            name, _, value = term.partition("=")
            terms.append((name, "=", value))
    return terms


def _matches(row: dict[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    for name, op, value in terms:
        have = str(row.get(name, ""))
        if (op == "=" and have != value) or (op == "LIKE" and value not in have):
            return False
    return True


@dataclass
class FakeServiceNow:
    user: str = "flotilla"
    password: str = "s3cret"
    changes: list[dict[str, Any]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)  # note text -> PATCHes seen
    refused: list[str] = field(default_factory=list)  # why requests were refused

    def add_change(self, number: str, state: str = "-2") -> dict[str, Any]:
        change = {"sys_id": uuid.uuid4().hex, "number": number, "state": state}
        self.changes.append(change)
        return change

    def notes(self, number: str) -> list[str]:
        sys_id = next(c["sys_id"] for c in self.changes if c["number"] == number)
        return [j["value"] for j in self.journal if j["element_id"] == sys_id]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes(
            [
                web.get("/api/now/table/{table}", self._list),
                web.patch("/api/now/table/change_request/{sys_id}", self._patch),
            ]
        )
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            self.refused.append(f"auth {request.method} {request.path}")
            return _error(401, "User Not Authenticated", "Required to provide Auth information")
        accept = request.headers.get("Accept", "*/*")
        if "application/json" not in accept and "*/*" not in accept:
            self.refused.append(f"accept {accept}")
            return _error(406, "Not Acceptable")
        return await handler(request)

    async def _list(self, request: web.Request) -> web.Response:
        table = request.match_info["table"]
        rows = {"change_request": self.changes, "sys_journal_field": self.journal}.get(table)
        if rows is None:
            return _error(400, "Invalid table", table)
        terms = _query(request.query.get("sysparm_query", ""))
        found = [r for r in rows if _matches(r, terms)]
        limit = int(request.query.get("sysparm_limit", "10000"))
        fields = [f for f in request.query.get("sysparm_fields", "").split(",") if f]
        result = [{k: v for k, v in r.items() if not fields or k in fields} for r in found]
        return web.json_response({"result": result[:limit]})

    async def _patch(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            self.refused.append(f"content type {request.content_type}")
            return _error(415, "Unsupported Media Type")
        change = next(
            (c for c in self.changes if c["sys_id"] == request.match_info["sys_id"]), None
        )
        if change is None:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts it")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "Exception while reading request", "not JSON")
        unknown = set(body) - FIELDS
        if unknown or ("state" in body and body["state"] not in STATES):
            self.refused.append(f"fields {sorted(body)} state {body.get('state')}")
            return _error(400, "Invalid field or value", str(sorted(unknown)))
        note = str(body.get("work_notes", ""))
        seen = self.attempts[note] = self.attempts.get(note, 0) + 1
        if seen == 1:
            return _error(503, "Service Unavailable")
        if "state" in body:
            change["state"] = body["state"]
        if note:
            self.journal.append(
                {
                    "sys_id": uuid.uuid4().hex,
                    "element_id": change["sys_id"],
                    "element": "work_notes",
                    "name": "change_request",
                    "value": note,
                }
            )
        if seen == 2:
            return _error(500, "Internal Server Error")  # written, answer lost
        return web.json_response({"result": change})
