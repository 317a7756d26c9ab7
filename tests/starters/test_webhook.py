"""The webhook service over HTTP on an ephemeral port: authentication, one-line errors,
idempotent starts, ITSM approvals recorded in the report, no secret in history.

Offline tests point the app at a closed port (no Temporal needed); the rest run the real
dev server, worker and lab, on two lab clusters of their own (an add-on rollout of coredns).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from fleet.models import RecordsQuery
from fleet.rollout_models import RolloutReport, RunStatus
from starters.inventory import list_clusters, onboard_many
from starters.webhook import Auth, create_app, start_site
from tests.conftest import RunningWorker, lab_request
from tests.starters.conftest import FLOTILLA, Run, assert_one_line_error
from tests.starters.test_cli_errors import closed_port
from tests.workflows.rollout_support import eventually

SECRET = f"whsec-{uuid.uuid4().hex}"
TOKEN = f"tok-{uuid.uuid4().hex}"
IMAGE = "registry.k8s.io/coredns/coredns:v1.11.4"


@dataclass
class Hook:
    """An aiohttp client for one running webhook app."""

    url: str
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        auth: str = "signature",  # signature | token | none | bad-signature
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        if auth in ("signature", "bad-signature"):
            secret = SECRET if auth == "signature" else "not-the-secret"
            digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
            headers["X-Flotilla-Signature"] = f"sha256={digest}"
        elif auth == "token":
            headers["Authorization"] = f"Bearer {TOKEN}"
        async with self.session.request(method, self.url + path, data=raw, headers=headers) as r:
            return r.status, await r.json()


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
    """Two fresh lab clusters, onboarded, labelled `suite=<id>`; returns that selector."""
    suite = f"w{uuid.uuid4().hex[:6]}"
    names = [f"{suite}-{i}" for i in range(2)]
    labels = {"env": "prod", "region": "eu", "provider": "aws", "suite": suite}
    for name in names:
        await asyncio.to_thread(lab.admin.add_cluster, name, labels)
    try:
        requests = [lab_request(lab, name) for name in names]
        results = await onboard_many(worker.client, requests, task_queue=worker.task_queue)
        assert not [r for r in results if isinstance(r, BaseException)], results

        async def listed() -> bool:
            records = await list_clusters(worker.client, RecordsQuery(selector=f"suite={suite}"))
            return len(records) == len(names)

        await eventually(listed)
        yield f"suite={suite}"
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(lab.admin.remove_cluster, name)


def addon(selector: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "addon",
        "name": "coredns",
        "image": IMAGE,
        "selector": selector,
        "waves": "canary:1,rest",
        **fields,
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


async def test_serve_runs_until_interrupted(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "FLOTILLA_WEBHOOK_TOKEN": TOKEN}
    process = await asyncio.create_subprocess_exec(
        FLOTILLA, "webhook", "serve", "--port", "0", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        line = (await process.stderr.readline()).decode()
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


async def test_healthz_needs_no_credentials(offline: Hook) -> None:
    assert await offline.call("GET", "/healthz", auth="none") == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("auth", "expected"),
    [("none", "missing credentials"), ("bad-signature", "bad X-Flotilla-Signature")],
)
async def test_unauthenticated_requests_are_refused(
    offline: Hook, auth: str, expected: str
) -> None:
    status, answer = await offline.call("POST", "/v1/rollouts", addon("a=b"), key="k1", auth=auth)
    assert status == 401 and expected in one_line(answer)
    status, answer = await offline.call("GET", "/v1/operations/rollout:k8s:x", auth=auth)
    assert status == 401, answer


@pytest.mark.parametrize("auth", ["signature", "token"])
async def test_bad_requests_answer_one_line(offline: Hook, auth: str) -> None:
    cases: list[tuple[Any, str | None, int, str]] = [
        (addon("a=b"), None, 400, "missing Idempotency-Key"),
        (addon("a=b"), "has/slash", 400, "bad Idempotency-Key"),
        (b"{not json", "k1", 400, "malformed JSON"),
        ({"kind": "k8s"}, "k1", 422, "to: Field required"),
        ({"kind": "helm"}, "k1", 422, "does not match any of the expected tags"),
        (addon("a=b", approve_betwen=True), "k1", 422, "approve_betwen: Extra inputs"),
        (addon("a=b", max_concurrent=0), "k1", 422, "max_concurrent"),
        (addon("a=b", soak="forever"), "k1", 422, "bad duration"),
        (addon("env in (eu"), "k1", 422, "bad label selector"),
        ({"kind": "k8s", "to": "v1.31"}, "k1", 422, "not a Kubernetes version"),
    ]
    for body, key, code, expected in cases:
        status, answer = await offline.call("POST", "/v1/rollouts", body, key=key, auth=auth)
        assert (status, expected in one_line(answer)) == (code, True), (body, answer)


async def test_temporal_unreachable_is_503(offline: Hook) -> None:
    status, answer = await offline.call("POST", "/v1/rollouts", addon("a=b"), key="k2")
    assert status == 503 and "Temporal is unreachable" in one_line(answer)
    status, answer = await offline.call("GET", "/v1/operations/rollout:k8s:x")
    assert status == 503, answer


async def test_unknown_route_and_action(offline: Hook) -> None:
    status, answer = await offline.call("GET", "/v1/nothing")
    assert status == 404 and one_line(answer)
    status, answer = await offline.call("POST", "/v1/operations/k8s:x/frob", {"who": "me"})
    assert status == 404 and "unknown action" in one_line(answer)


# ---------------------------------------------------------------- with Temporal and the lab


async def test_unknown_workflow_is_404(hook: Hook) -> None:
    status, answer = await hook.call("GET", "/v1/operations/rollout:k8s:nope")
    assert status == 404 and "no operation" in one_line(answer)
    body = {"approver": "alice"}
    status, answer = await hook.call("POST", "/v1/operations/rollout:k8s:nope/approve", body)
    assert status == 404 and "no rollout" in one_line(answer)


async def test_bad_plans_are_refused_before_anything_starts(
    hook: Hook, suite: str, client: Client
) -> None:
    key = uuid.uuid4().hex[:10]
    cases = [
        (addon("suite=nobody"), "plan refused: no clusters matching"),
        ({"kind": "k8s", "to": "v1.33.0", "selector": suite}, "plan refused"),
        # Only the engine's live preflight (the dry run on the worker) can tell this one.
        (addon(suite, name="no-such-addon"), "PlanRefused"),
    ]
    for body, expected in cases:
        status, answer = await hook.call("POST", "/v1/rollouts", body, key=key)
        assert (status, expected in one_line(answer)) == (422, True), (body, answer)
    for kind in ("addon", "k8s"):
        status, _ = await hook.call("GET", f"/v1/operations/rollout:{kind}:{key}")
        assert status == 404


async def test_idempotent_start_and_itsm_approval(hook: Hook, suite: str, client: Client) -> None:
    key = f"ci-{uuid.uuid4().hex[:8]}"
    body = addon(suite, approve_between=True)
    status, first = await hook.call("POST", "/v1/rollouts", body, key=key)
    assert status == 201, first
    workflow_id = f"rollout:addon:{key}"
    assert first["workflow_id"] == workflow_id and first["created"] is True
    assert first["clusters"] == [f"{suite.split('=')[1]}-{i}" for i in range(2)]

    # A repeated delivery (here with the bearer token) returns the same run.
    status, again = await hook.call("POST", "/v1/rollouts", body, key=key, auth="token")
    assert status == 200, again
    assert (again["workflow_id"], again["run_id"], again["created"]) == (
        workflow_id,
        first["run_id"],
        False,
    )

    async def awaiting_approval() -> dict[str, Any] | None:
        _, op = await hook.call("GET", f"/v1/operations/{workflow_id}")
        waves = (op.get("progress") or {}).get("waves") or [{}, {}]
        return op if waves[1].get("status") == "awaiting-approval" else None

    op = await eventually(awaiting_approval, attempts=600)
    assert op["status"] == "RUNNING" and op["type"] == "Rollout"

    control = f"/v1/operations/{workflow_id}"
    status, answer = await hook.call("POST", f"{control}/resume", {"who": "ci"})
    assert status == 409 and "is not paused" in one_line(answer)
    status, answer = await hook.call("POST", f"{control}/pause", {"who": "ci", "reason": "hold"})
    assert (status, answer["action"], answer["who"]) == (200, "pause", "ci"), answer
    status, answer = await hook.call("POST", f"{control}/resume", {"who": "ci"})
    assert status == 200, answer
    status, answer = await hook.call("POST", f"{control}/approve", {"approver": ""})
    assert status == 422 and "approver" in one_line(answer)
    approval = {"approver": "alice@example.com", "change_id": "CHG0012345", "comment": "CAB ok"}
    status, answer = await hook.call("POST", f"{control}/approve", approval)
    assert status == 200, answer
    assert answer["action"] == "approve" and answer["who"] == "alice@example.com"

    handle = client.get_workflow_handle(workflow_id, result_type=RolloutReport)
    report = await handle.result()
    assert report.status == RunStatus.COMPLETED, report
    [recorded] = report.approvals
    assert (recorded.who, recorded.wave) == ("alice@example.com", 1)
    assert recorded.note == "change CHG0012345: CAB ok"

    # After the run ended: still the same run, never a second one.
    status, late = await hook.call("POST", "/v1/rollouts", body, key=key)
    assert status == 200, late
    assert (late["run_id"], late["status"], late["created"]) == (
        first["run_id"],
        "COMPLETED",
        False,
    )
    status, op = await hook.call("GET", f"/v1/operations/{workflow_id}")
    assert (status, op["status"], op["first_run_id"]) == (200, "COMPLETED", first["run_id"])
    assert op["result"]["approvals"][0]["who"] == "alice@example.com"
    status, answer = await hook.call("POST", f"{control}/approve", approval)
    assert status == 409 and "completed" in one_line(answer)

    histories = await chain_histories(client, workflow_id, first["run_id"])
    assert len(histories) == 2  # the parent continues-as-new between waves
    for history in histories:
        assert SECRET.encode() not in history and TOKEN.encode() not in history


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
