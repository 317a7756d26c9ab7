"""The API's webhook routes over HTTP on an ephemeral port: signed requests that cannot be
replayed or moved, one-line errors, idempotent starts, ITSM approvals of a named wave
recorded in the report, the OpenAPI schema, no secret in history.

Offline tests point the app at a closed port (no Temporal needed: a request that passes
authentication answers 503); the rest run the real dev server, worker and lab, on four lab
clusters of their own, two per rollout (add-on rollouts of coredns).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from yarl import URL

from fleet.models import RecordsQuery
from fleet.rollout_models import RolloutReport, RunStatus
from starters.api import create_app, start_site
from starters.api_auth import Auth
from starters.inventory import list_clusters, onboard_many
from starters.webhook_models import START_BODY, ApproveBody
from starters.webhook_signing import (
    KEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    MemoryNonces,
    NoncesFull,
    sign,
)
from tests.conftest import RunningWorker, lab_request
from tests.starters.conftest import FLOTILLA, Run, assert_one_line_error
from tests.starters.test_cli_errors import closed_port
from tests.workflows.rollout_support import eventually

SECRET = f"whsec-{uuid.uuid4().hex}"
TOKEN = f"tok-{uuid.uuid4().hex}"
IMAGE = "registry.k8s.io/coredns/coredns:v1.11.4"


Headers = dict[str, str]
Answer = tuple[int, dict[str, Any]]


@dataclass
class Hook:
    """An aiohttp client for one running webhook app; paths go on the wire unchanged."""

    url: str
    session: aiohttp.ClientSession

    def sign(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        auth: str = "signature",  # signature | token | none | bad-signature | body-only
        now: float | None = None,
    ) -> tuple[bytes, Headers]:
        """The raw body and headers of one request."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers[KEY_HEADER] = key
        if auth in ("signature", "bad-signature"):
            secret = SECRET if auth == "signature" else "not-the-secret"
            headers |= sign(secret, method, path, raw, key=key or "", now=now)
        elif auth == "body-only":  # the old scheme: an HMAC of the body alone
            digest = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        elif auth == "token":
            headers["Authorization"] = f"Bearer {TOKEN}"
        return raw, headers

    async def send(self, method: str, path: str, raw: bytes, headers: Headers) -> Answer:
        url = URL(self.url + path, encoded=True)
        async with self.session.request(method, url, data=raw, headers=headers) as r:
            return r.status, await r.json()

    async def call(self, method: str, path: str, body: Any = None, **how: Any) -> Answer:
        return await self.send(method, path, *self.sign(method, path, body, **how))


@contextlib.asynccontextmanager
async def serving(**app_args: Any) -> AsyncIterator[Hook]:
    app = create_app(auth=Auth(secret=SECRET, token=TOKEN), **app_args)
    runner, url = await start_site(app, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Hook(url, session)
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def offline() -> AsyncIterator[Hook]:
    """The webhook with Temporal unreachable (a closed port)."""
    async with serving(address=f"127.0.0.1:{closed_port()}") as hook:
        yield hook


@pytest.fixture(scope="module")
async def hook(worker: RunningWorker) -> AsyncIterator[Hook]:
    async with serving(client=worker.client, task_queue=worker.task_queue) as hook:
        yield hook


@pytest.fixture(scope="module")
async def suite(worker: RunningWorker, lab: Any) -> AsyncIterator[str]:
    """Four fresh lab clusters, onboarded, labelled `suite=<id>` and `pair=a|b` (two each);
    returns the id. The clusters are `<id>-a0`, `<id>-a1`, `<id>-b0`, `<id>-b1`."""
    suite = f"w{uuid.uuid4().hex[:6]}"
    names = [f"{suite}-{pair}{i}" for pair in "ab" for i in range(2)]
    labels = {"env": "prod", "region": "eu", "provider": "aws", "suite": suite}
    for name in names:
        await asyncio.to_thread(lab.admin.add_cluster, name, {**labels, "pair": name[-2]})
    try:
        requests = [lab_request(lab, name) for name in names]
        results = await onboard_many(worker.client, requests, task_queue=worker.task_queue)
        assert not [r for r in results if isinstance(r, BaseException)], results

        async def listed() -> bool:
            records = await list_clusters(worker.client, RecordsQuery(selector=f"suite={suite}"))
            return len(records) == len(names)

        await eventually(listed)
        yield suite
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(lab.admin.remove_cluster, name)


def addon(selector: str, name: str = "coredns", **options: Any) -> dict[str, Any]:
    return {
        "operation": {"kind": "addon", "name": name, "image": IMAGE},
        "selector": selector,
        "waves": "canary:1,rest",
        "options": options,
    }


def one_line(answer: dict[str, Any]) -> str:
    assert set(answer) == {"error"}, answer
    error = str(answer["error"])
    assert error and "\n" not in error and "Traceback" not in error, error
    return error


# ---------------------------------------------------------------- the command


def test_serve_refuses_to_start_without_credentials(flotilla: Run) -> None:
    line = assert_one_line_error(flotilla("webhook", "serve", "--port", "0"), 2)
    assert "FLOTILLA_WEBHOOK_SECRET" in line and "--insecure-no-auth" in line


def test_serve_refuses_a_bad_window(flotilla: Run) -> None:
    env = {"FLOTILLA_WEBHOOK_TOKEN": TOKEN, "FLOTILLA_WEBHOOK_WINDOW": "forever"}
    line = assert_one_line_error(flotilla("webhook", "serve", "--port", "0", env=env), 2)
    assert "FLOTILLA_WEBHOOK_WINDOW must be a number of seconds" in line


async def test_serve_runs_until_interrupted(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "FLOTILLA_WEBHOOK_TOKEN": TOKEN}
    process = await asyncio.create_subprocess_exec(
        FLOTILLA, "webhook", "serve", "--port", "0", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        line = ""
        while "listening on" not in line:  # after the log's warning of an open API
            line = (await process.stderr.readline()).decode()
            assert line, "the service exited"
        assert "listening on http://127.0.0.1:" in line, line
        url = line.split()[-1]
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as r:
            assert r.status == 200
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 0
        assert TOKEN not in (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ---------------------------------------------------------------- offline


async def test_public_routes_need_no_credentials(offline: Hook) -> None:
    assert await offline.call("GET", "/healthz", auth="none") == (200, {"status": "ok"})
    status, schema = await offline.call("GET", "/openapi.json", auth="none")
    assert status == 200 and schema["openapi"] == "3.1.0"


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ("none", "missing credentials"),
        ("bad-signature", "bad X-Flotilla-Signature: it must sign this method, path"),
        # The old body-only HMAC; of an empty body it was a permanent read key.
        ("body-only", "bad X-Flotilla-Signature: expected v1=<hex>"),
    ],
)
async def test_unauthenticated_requests_are_refused(
    offline: Hook, auth: str, expected: str
) -> None:
    status, answer = await offline.call("POST", "/v1/rollouts", addon("a=b"), key="k1", auth=auth)
    assert status == 401 and expected in one_line(answer)
    status, answer = await offline.call("GET", "/v1/operations/rollout:k8s:x", auth=auth)
    assert status == 401 and expected in one_line(answer)


async def test_a_signature_binds_method_path_key_body_and_nonce(offline: Hook) -> None:
    """Offline, an authenticated request answers 503 (Temporal is down); a captured one
    altered in any signed part is 401, and sent twice 409."""
    raw, headers = offline.sign("POST", "/v1/rollouts", addon("a=b"), key="k1")
    refused = "bad X-Flotilla-Signature"
    status, answer = await offline.send("POST", "/v1/rollouts", raw, {**headers, KEY_HEADER: "k2"})
    assert status == 401 and refused in one_line(answer)
    other_body = json.dumps(addon("a=c")).encode()
    status, answer = await offline.send("POST", "/v1/rollouts", other_body, headers)
    assert status == 401 and refused in one_line(answer)

    pause = "/v1/operations/rollout:addon:run-a/pause"
    raw, headers = offline.sign("POST", pause, {"who": "ci"})
    for moved in (
        "/v1/operations/rollout:addon:run-b/pause",
        "/v1/operations/rollout:addon:run-a/abort",
        "/v1/operations/rollout:addon:run-a/pause?x=1",
    ):
        status, answer = await offline.send("POST", moved, raw, headers)
        assert status == 401 and refused in one_line(answer), moved

    read = "/v1/operations/rollout:addon:run-a"
    raw, headers = offline.sign("GET", read)
    status, answer = await offline.send("GET", "/v1/operations/rollout:addon:run-b", raw, headers)
    assert status == 401 and refused in one_line(answer)
    assert (await offline.send("GET", read, raw, headers))[0] == 503
    status, answer = await offline.send("GET", read, raw, headers)
    assert status == 409 and "replayed request" in one_line(answer)

    for header in ("X-Flotilla-Timestamp", NONCE_HEADER):
        raw, headers = offline.sign("GET", read)
        del headers[header]
        status, answer = await offline.send("GET", read, raw, headers)
        assert status == 401 and f"missing or bad {header}" in one_line(answer)
    headers = sign(SECRET, "GET", read, nonce="short")
    status, answer = await offline.send("GET", read, b"", headers)
    assert status == 401 and f"missing or bad {NONCE_HEADER}" in one_line(answer)


async def test_the_documented_curl_signing_works(offline: Hook) -> None:
    """docs/webhooks.md's bash function signs requests the service accepts (503 offline)."""
    docs = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    [function] = re.findall(r"```sh\n(# flotilla_call .*?)```", docs, re.DOTALL)
    calls = """
        flotilla_call GET /v1/operations/rollout:k8s:ci-1; echo
        flotilla_call POST /v1/rollouts '{"operation": {"kind": "k8s", "version": "v1.31.2"}}' ci-1
        echo
        FLOTILLA_WEBHOOK_SECRET=other flotilla_call GET /v1/operations/rollout:k8s:ci-1
    """
    env = {"PATH": os.environ["PATH"], "FLOTILLA_URL": offline.url}
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euc",
        function + calls,
        env={**env, "FLOTILLA_WEBHOOK_SECRET": SECRET},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    answers = [one_line(json.loads(line)) for line in out.decode().splitlines()]
    assert ["Temporal is unreachable" in a for a in answers] == [True, True, False], answers
    assert "bad X-Flotilla-Signature" in answers[2]


async def test_signatures_expire_outside_the_window(offline: Hook) -> None:
    read = "/v1/operations/rollout:addon:run-a"
    for skew in (-301, 301):
        status, answer = await offline.call("GET", read, now=time.time() + skew)
        assert status == 401 and "expired signature" in one_line(answer), skew
    assert (await offline.call("GET", read, now=time.time() - 290))[0] == 503


async def test_nonces_are_bounded_and_forgotten_after_their_window() -> None:
    nonces = MemoryNonces(limit=2)
    now = time.time()
    assert await nonces.remember("a" * 16, until=now + 60)
    assert not await nonces.remember("a" * 16, until=now + 60)
    assert await nonces.remember("b" * 16, until=now - 1)  # already out of its window
    assert await nonces.remember("b" * 16, until=now + 60)  # so forgotten, taken again
    with pytest.raises(NoncesFull):
        await nonces.remember("c" * 16, until=now + 60)


@pytest.mark.parametrize("auth", ["signature", "token"])
async def test_bad_requests_answer_one_line(offline: Hook, auth: str) -> None:
    cases: list[tuple[Any, str | None, int, str]] = [
        (addon("a=b"), None, 400, "missing Idempotency-Key"),
        (addon("a=b"), "has/slash", 400, "bad Idempotency-Key"),
        (b"{not json", "k1", 400, "malformed JSON"),
        ({"operation": {"kind": "k8s"}}, "k1", 422, "operation.version: Field required"),
        ({"operation": {"kind": "helm"}}, "k1", 422, "does not match any of the expected tags"),
        (addon("a=b", approve_betwen=True), "k1", 422, "approve_betwen: Extra inputs"),
        (addon("a=b", max_concurrent=0), "k1", 422, "options.max_concurrent"),
        (addon("a=b", soak="forever"), "k1", 422, "bad duration"),
        (addon("env in (eu"), "k1", 422, "selector: "),
        ({"operation": {"kind": "k8s", "version": "v1.31"}}, "k1", 422, "not a Kubernetes"),
        (addon("a=b", name="x", cluster_timeout="0"), "k1", 422, "options.cluster_timeout"),
    ]
    for body, key, code, expected in cases:
        status, answer = await offline.call("POST", "/v1/rollouts", body, key=key, auth=auth)
        assert (status, expected in one_line(answer)) == (code, True), (body, answer)


async def test_temporal_unreachable_is_503(offline: Hook) -> None:
    status, answer = await offline.call("POST", "/v1/rollouts", addon("a=b"), key="k2")
    assert status == 503 and "Temporal is unreachable" in one_line(answer)
    status, answer = await offline.call("GET", "/v1/operations/rollout:k8s:x")
    assert status == 503, answer


async def test_unknown_route_action_and_ids(offline: Hook) -> None:
    status, answer = await offline.call("GET", "/v1/nothing")
    assert status == 404 and one_line(answer)
    status, answer = await offline.call("POST", "/v1/operations/k8s:x/frob", {"who": "me"})
    assert status == 404 and "unknown action" in one_line(answer)
    # Child runs (a '/' sent as %2F), dry runs: not served (cluster entities: see below).
    for workflow_id in ("rollout:addon:k%2Feu-1", "addon:k%2Feu-1", "rollout:addon:k:dry-run:1"):
        status, answer = await offline.call("GET", f"/v1/operations/{workflow_id}")
        assert status == 404 and "is not a rollout id" in one_line(answer), workflow_id
        pause = f"/v1/operations/{workflow_id}/pause"
        status, answer = await offline.call("POST", pause, {"who": "me"})
        assert status == 404 and "is not a rollout id" in one_line(answer), workflow_id


async def test_an_approval_names_its_wave(offline: Hook) -> None:
    body = {"approver": "alice"}
    status, answer = await offline.call("POST", "/v1/operations/k8s:x/approve", body)
    assert status == 422 and "wave: Field required" in one_line(answer)


async def test_openapi_describes_every_route(offline: Hook) -> None:
    """The schema is generated from the routes and their pydantic models."""
    _, schema = await offline.call("GET", "/openapi.json", auth="none")
    app = create_app(auth=Auth(secret=SECRET), address=f"127.0.0.1:{closed_port()}")
    for route in app.routes:
        path = getattr(route, "path", "").replace(":path}", "}")
        methods = getattr(route, "methods", None) or set()
        if not path.startswith("/v1/") or path == "/v1/operations/{workflow_id}/{action}":
            continue
        for method in methods - {"HEAD"}:
            assert method.lower() in schema["paths"][path], (method, path)
    read = schema["paths"]["/v1/operations/{workflow_id}"]["get"]
    assert read["security"] == [{"HTTPBearer": []}, {"signature": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]

    start = schema["paths"]["/v1/rollouts"]["post"]
    assert [p["name"] for p in start["parameters"]] == [KEY_HEADER]
    components = schema["components"]["schemas"]
    body = start["requestBody"]["content"]["application/json"]["schema"]
    definition = components[body["$ref"].rsplit("/", 1)[1]]
    assert set(definition["properties"]) >= set(START_BODY.json_schema()["properties"])
    kinds = definition["properties"]["operation"]["discriminator"]["mapping"]
    assert {"k8s", "addon"} <= set(kinds)
    approve = components[ApproveBody.__name__]
    assert "wave" in approve["required"]
    assert schema["components"]["schemas"]["ErrorResponse"]["required"] == ["error"]


# ---------------------------------------------------------------- with Temporal and the lab


async def test_unknown_workflow_is_404(hook: Hook, suite: str) -> None:
    status, answer = await hook.call("GET", "/v1/operations/rollout:k8s:nope")
    assert status == 404 and "no rollout" in one_line(answer)
    # `cluster:<name>` reads as the rollout `rollout:cluster:<name>`, never the record.
    status, answer = await hook.call("GET", f"/v1/operations/cluster:{suite}-a0")
    assert status == 404 and "no rollout" in one_line(answer)
    body = {"approver": "alice", "wave": "rest"}
    status, answer = await hook.call("POST", "/v1/operations/rollout:k8s:nope/approve", body)
    assert status == 404 and "no rollout" in one_line(answer)


async def test_bad_plans_are_refused_before_anything_starts(
    hook: Hook, suite: str, client: Client
) -> None:
    key = uuid.uuid4().hex[:10]
    cases = [
        (addon("suite=nobody"), "plan refused: no clusters matching"),
        (
            {"operation": {"kind": "k8s", "version": "v1.33.0"}, "selector": f"suite={suite}"},
            "plan refused",
        ),
        # Only the operation's live preflight (on the worker) can tell this one.
        (addon(f"suite={suite}", name="no-such-addon"), "plan refused, nothing was changed"),
    ]
    for body, expected in cases:
        status, answer = await hook.call("POST", "/v1/rollouts", body, key=key)
        assert (status, expected in one_line(answer)) == (422, True), (body, answer)
    for kind in ("addon", "k8s"):
        status, _ = await hook.call("GET", f"/v1/operations/rollout:{kind}:{key}")
        assert status == 404


async def awaiting_approval(hook: Hook, workflow_id: str) -> dict[str, Any]:
    """The operation once its second wave waits for approval."""

    async def probe() -> dict[str, Any] | None:
        _, op = await hook.call("GET", f"/v1/operations/{workflow_id}")
        waves = (op.get("progress") or {}).get("waves") or [{}, {}]
        return op if waves[1].get("status") == "awaiting-approval" else None

    return await eventually(probe, attempts=600)


async def test_idempotent_start_and_itsm_approval(hook: Hook, suite: str, client: Client) -> None:
    key = f"ci-{uuid.uuid4().hex[:8]}"
    body = addon(f"suite={suite},pair=a", approve_between=True)
    status, first = await hook.call("POST", "/v1/rollouts", body, key=key)
    assert status == 201, first
    workflow_id = f"rollout:addon:{key}"
    assert first["workflow_id"] == workflow_id and first["created"] is True
    assert first["clusters"] == [f"{suite}-a0", f"{suite}-a1"]

    # A repeated delivery (here with the bearer token) returns the same run.
    status, again = await hook.call("POST", "/v1/rollouts", body, key=key, auth="token")
    assert status == 200, again
    assert (again["workflow_id"], again["run_id"], again["created"]) == (
        workflow_id,
        first["run_id"],
        False,
    )

    op = await awaiting_approval(hook, workflow_id)
    assert op["status"] == "running" and op["type"] == "Rollout"
    assert [w["name"] for w in op["progress"]["waves"]] == ["canary", "rest"]

    control = f"/v1/operations/{workflow_id}"
    status, answer = await hook.call("POST", f"{control}/resume", {"who": "ci"})
    assert status == 409 and "is not paused" in one_line(answer)
    status, answer = await hook.call("POST", f"{control}/pause", {"who": "ci", "reason": "hold"})
    # Who asked is the authenticated principal (the shared secret's), not the body's `who`.
    assert (status, answer["action"], answer["who"]) == (200, "pause", "webhook"), answer
    status, answer = await hook.call("POST", f"{control}/resume", {"who": "ci"})
    assert status == 200, answer
    status, answer = await hook.call("POST", f"{control}/approve", {"wave": ""})
    assert status == 422 and "wave" in one_line(answer)
    approval = {"approver": "alice@example.com", "change_id": "CHG0012345", "comment": "CAB ok"}
    status, answer = await hook.call("POST", f"{control}/approve", {**approval, "wave": "canary"})
    assert status == 409 and "waits for approval of wave 'rest', not 'canary'" in one_line(answer)
    raw, headers = hook.sign("POST", f"{control}/approve", {**approval, "wave": "rest"})
    status, answer = await hook.send("POST", f"{control}/approve", raw, headers)
    assert status == 200, answer
    assert answer["action"] == "approve" and answer["who"] == "webhook"

    handle = client.get_workflow_handle(workflow_id, result_type=RolloutReport)
    report = await handle.result()
    assert report.status == RunStatus.COMPLETED, report
    [recorded] = report.approvals
    assert (recorded.who, recorded.wave) == ("webhook", 1)
    assert recorded.note == "change CHG0012345: CAB ok (for alice@example.com)"

    # After the run ended: still the same run, never a second one.
    status, late = await hook.call("POST", "/v1/rollouts", body, key=key)
    assert status == 200, late
    assert (late["run_id"], late["status"], late["created"]) == (
        first["run_id"],
        "succeeded",
        False,
    )
    status, op = await hook.call("GET", f"/v1/operations/{workflow_id}")
    assert (status, op["status"], op["first_run_id"]) == (200, "succeeded", first["run_id"])
    assert op["temporal_status"] == "COMPLETED"
    assert op["result"]["approvals"][0]["who"] == "webhook"
    status, answer = await hook.call("POST", f"{control}/approve", {**approval, "wave": "rest"})
    assert status == 409 and "completed" in one_line(answer)
    status, answer = await hook.send("POST", f"{control}/approve", raw, headers)
    assert status == 409 and "replayed request" in one_line(answer)

    histories = await chain_histories(client, workflow_id, first["run_id"])
    assert len(histories) == 2  # the parent continues-as-new between waves
    for history in histories:
        assert SECRET.encode() not in history and TOKEN.encode() not in history


async def test_captured_requests_start_and_control_nothing(
    hook: Hook, suite: str, client: Client
) -> None:
    key = f"ci-{uuid.uuid4().hex[:8]}"
    body = addon(f"suite={suite},pair=b", approve_between=True)
    raw, headers = hook.sign("POST", "/v1/rollouts", body, key=key)
    status, first = await hook.send("POST", "/v1/rollouts", raw, headers)
    assert status == 201, first
    workflow_id = first["workflow_id"]

    refused = []
    # The captured start, as it was, with a new Idempotency-Key, and outside the window.
    refused.append(await hook.send("POST", "/v1/rollouts", raw, headers))
    refused.append(await hook.send("POST", "/v1/rollouts", raw, {**headers, KEY_HEADER: "k2"}))
    refused.append(await hook.call("POST", "/v1/rollouts", body, key="k3", now=time.time() - 600))
    # A correctly signed start that reuses the nonce.
    nonce = headers[NONCE_HEADER]
    reused = sign(SECRET, "POST", "/v1/rollouts", raw, key="k4", nonce=nonce)
    refused.append(await hook.send("POST", "/v1/rollouts", raw, reused))
    assert [status for status, _ in refused] == [409, 401, 401, 409], refused
    for key in ("k2", "k3", "k4"):
        status, _ = await hook.call("GET", f"/v1/operations/rollout:addon:{key}")
        assert status == 404, key

    await awaiting_approval(hook, workflow_id)
    # Controls captured for another run (here one that does not exist), moved to this one.
    for action, control in [
        ("abort", {"who": "ci"}),
        ("pause", {"who": "ci"}),
        ("approve", {"approver": "alice", "wave": "rest"}),
    ]:
        raw, headers = hook.sign("POST", f"/v1/operations/rollout:addon:other/{action}", control)
        status, answer = await hook.send(
            "POST", f"/v1/operations/rollout:addon:other/{action}", raw, headers
        )
        assert status == 404 and "no rollout" in one_line(answer)
        status, answer = await hook.send(
            "POST", f"/v1/operations/{workflow_id}/{action}", raw, headers
        )
        assert status == 401 and "bad X-Flotilla-Signature" in one_line(answer), action
    status, op = await hook.call("GET", f"/v1/operations/{workflow_id}")
    assert status == 200 and op["status"] == "running"
    progress = op["progress"]
    assert (progress["paused"], progress["controls"], progress["approvals"]) == (False, [], [])

    status, answer = await hook.call("POST", f"/v1/operations/{workflow_id}/abort", {"who": "ci"})
    assert status == 200, answer
    report = await client.get_workflow_handle(workflow_id, result_type=RolloutReport).result()
    assert report.status == RunStatus.ABORTED, report
    # Temporal says COMPLETED; the webhook says what happened.
    status, op = await hook.call("GET", f"/v1/operations/{workflow_id}")
    assert (status, op["status"], op["temporal_status"]) == (200, "aborted", "COMPLETED"), op


async def chain_histories(client: Client, workflow_id: str, run_id: str) -> list[bytes]:
    """Every run's history of a continue-as-new chain, as bytes, from its first run."""
    histories = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history.to_json().encode())
        last = history.events[-1]
        continued = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        attributes = last.workflow_execution_continued_as_new_event_attributes
        run_id = attributes.new_execution_run_id if continued else ""
    return histories
