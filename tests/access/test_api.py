"""Who may do what, over HTTP, on the dev server, the worker and the lab: roles within
teams, refusals naming the clusters, four-eyes approvals by a second principal (an OIDC
user whose group maps to the approver role), refused JWTs, token revocation at the next
call, and an audit trail that names every caller and survives an empty Temporal.

Three lab clusters of this module: `<s>-a0`, `<s>-a1` (team a, env=prod) and `<s>-b0`
(team b). Tokens: alice operates team a, bob team b, victor views team a, root is an
admin; carol signs in with an ID token (group a-approvers) signed by a key made here and
served as a JWKS over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from fleet.access import load_policy
from fleet.audit import read_export
from fleet.models import RecordsQuery
from fleet.rollout_models import RolloutReport, RunStatus
from fleet.store import DATABASE_ENV, Store
from starters.api import create_app, start_site
from starters.api_auth import Auth, Oidc
from starters.inventory import list_clusters, onboard_many
from tests.conftest import RunningWorker, lab_request, start_dev_server
from tests.starters.conftest import Run
from tests.workflows.rollout_support import eventually

IMAGE = "registry.k8s.io/coredns/coredns:v1.11.4"
AUDIENCE = "flotilla-api"
Answer = tuple[int, dict[str, Any]]


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]
    database: str
    suite: str
    issuer: str
    key: rsa.RSAPrivateKey
    kid: str = "test-key"
    calls: list[tuple[str, str]] = field(default_factory=list)  # (principal, action)

    def id_token(self, sub: str, *, groups: tuple[str, ...] = (), **override: Any) -> str:
        key = override.pop("key", self.key)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": sub,
            "groups": list(groups),
            "iat": now,
            "exp": now + 300,
            **override,
        }
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    async def call(self, who: str, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        token = self.tokens.get(who, who)  # a name with a token, or a raw bearer value
        headers = {"Authorization": f"Bearer {token}"}
        if "key" in kw:
            headers["Idempotency-Key"] = kw.pop("key")
        async with self.session.request(
            method, self.url + path, json=body, headers=headers, **kw
        ) as r:
            return r.status, await r.json()


@contextlib.asynccontextmanager
async def jwks_server(key: rsa.RSAPrivateKey, kid: str) -> AsyncIterator[str]:
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwks = {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}
    app = web.Application()

    async def serve_jwks(_: web.Request) -> web.Response:
        return web.json_response(jwks)

    async def discovery(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        return web.json_response({"issuer": base, "jwks_uri": f"{base}/jwks.json"})

    app.router.add_get("/jwks.json", serve_jwks)
    app.router.add_get("/.well-known/openid-configuration", discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def suite(worker: RunningWorker, lab: Any) -> AsyncIterator[str]:
    suite = f"x{uuid.uuid4().hex[:6]}"
    clusters = {f"{suite}-a0": "a", f"{suite}-a1": "a", f"{suite}-b0": "b"}
    for name, team in clusters.items():
        labels = {"env": "prod", "region": "eu", "provider": "aws", "suite": suite, "team": team}
        await asyncio.to_thread(lab.admin.add_cluster, name, labels)
    try:
        requests = [lab_request(lab, name) for name in clusters]
        results = await onboard_many(worker.client, requests, task_queue=worker.task_queue)
        assert not [r for r in results if isinstance(r, BaseException)], results

        async def listed() -> bool:
            records = await list_clusters(worker.client, RecordsQuery(selector=f"suite={suite}"))
            return len(records) == len(clusters)

        await eventually(listed)
        yield suite
    finally:
        for name in clusters:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(lab.admin.remove_cluster, name)


def write_policy(path: Path, suite: str) -> Path:
    policy = {
        "version": 1,
        "admins": ["user:root"],
        "teams": {
            "a": {
                "clusters": f"suite={suite},team=a",
                "viewer": ["user:victor"],
                "operator": ["user:alice"],
                "approver": ["user:alice", "group:a-approvers"],
            },
            "b": {"clusters": f"suite={suite},team=b", "operator": ["user:bob"]},
        },
    }
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture(scope="module")
async def api(
    worker: RunningWorker, suite: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    directory = tmp_path_factory.mktemp("access")
    database = str(directory / "flotilla.sqlite")
    store = Store(database)
    tokens = {name: store.create_token(name, [])[1] for name in ("alice", "bob", "victor", "root")}
    policy = load_policy(write_policy(directory / "access.yaml", suite))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # The worker's audit sink appends operation events to the same database.
    os.environ[DATABASE_ENV] = database
    async with jwks_server(key, "test-key") as issuer:
        oidc = Oidc(issuer=issuer, audience=AUDIENCE)  # keys found by OIDC discovery
        app = create_app(
            auth=Auth(store=store, oidc=oidc),
            client=worker.client,
            task_queue=worker.task_queue,
            policy=policy,
            store=store,
        )
        site, url = await start_site(app, host="127.0.0.1", port=0)
        try:
            async with aiohttp.ClientSession() as session:
                yield Api(url, session, tokens, database, suite, issuer, key)
        finally:
            await site.cleanup()
            store.close()
            os.environ.pop(DATABASE_ENV, None)


def addon(selector: str, **options: Any) -> dict[str, Any]:
    return {
        "operation": {"kind": "addon", "name": "coredns", "image": IMAGE},
        "selector": selector,
        "waves": "canary:1,rest",
        "options": options,
    }


def one_line(answer: dict[str, Any]) -> str:
    assert set(answer) == {"error"}, answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    return str(answer["error"])


async def test_a_viewer_cannot_start_and_sees_only_its_team(api: Api) -> None:
    s = api.suite
    status, answer = await api.call("victor", "POST", "/v1/rollouts", addon(f"suite={s}"), key="v1")
    assert status == 403 and "needs the operator role" in one_line(answer)
    status, listed = await api.call(
        "victor", "GET", "/v1/clusters", params={"selector": f"suite={s}"}
    )
    assert status == 200 and [c["name"] for c in listed["clusters"]] == [f"{s}-a0", f"{s}-a1"]
    status, who = await api.call("victor", "GET", "/v1/whoami")
    assert (who["name"], who["teams"], who["admin"]) == ("victor", {"a": ["viewer"]}, False)
    status, answer = await api.call("victor", "GET", f"/v1/clusters/{s}-b0")
    assert status == 404 and "you may see" in one_line(answer)
    status, answer = await api.call("victor", "GET", "/v1/audit")
    assert status == 403 and "needs the admin role" in one_line(answer)


async def test_an_operator_cannot_touch_another_teams_clusters(api: Api, flotilla: Run) -> None:
    s = api.suite
    key = f"b-{uuid.uuid4().hex[:6]}"
    status, answer = await api.call("bob", "POST", "/v1/rollouts", addon(f"suite={s}"), key=key)
    assert status == 403, answer
    assert f"outside the teams it operates: {s}-a0, {s}-a1" in one_line(answer)
    status, _ = await api.call("root", "GET", f"/v1/operations/rollout:addon:{key}")
    assert status == 404  # nothing started

    # The CLI goes through the API when FLOTILLA_API is set: bob sees team b's cluster only.
    env = {"FLOTILLA_API": api.url, "FLOTILLA_TOKEN": api.tokens["bob"]}
    result = await asyncio.to_thread(flotilla, "clusters", "list", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    names = [c["name"] for c in json.loads(result.stdout)]
    assert names == [f"{s}-b0"], names
    status, certs = await api.call("bob", "GET", "/v1/certs", params={"selector": f"suite={s}"})
    seen = certs["unscanned"] + [r["cluster"] for r in certs["reports"]]
    assert status == 200 and seen == [f"{s}-b0"], certs
    status, fleet = await api.call("bob", "GET", "/v1/overview", params={"selector": f"suite={s}"})
    assert status == 200 and [c["name"] for c in fleet["clusters"]] == [f"{s}-b0"], fleet
    status, answer = await api.call("bob", "GET", f"/v1/certs/{s}-a0")
    assert status == 404 and "you may see" in one_line(answer)
    result = await asyncio.to_thread(
        flotilla, "addon", "start", "--selector", f"suite={s}", "--name", "coredns",
        "--image", IMAGE, "--id", f"{key}-cli", env=env,
    )  # fmt: skip
    assert result.returncode == 1 and f"{s}-a0, {s}-a1" in result.stderr, result.stderr


async def test_four_eyes_the_starter_cannot_approve_a_second_approver_can(api: Api) -> None:
    s = api.suite
    key = f"a-{uuid.uuid4().hex[:6]}"
    body = addon(f"suite={s},team=a", approve_between=True)
    status, started = await api.call("alice", "POST", "/v1/rollouts", body, key=key)
    assert status == 201, started
    workflow_id = started["workflow_id"]
    api.calls.append(("alice", "rollouts.start"))
    _, victor_sees = await api.call("victor", "GET", "/v1/operations")
    _, bob_sees = await api.call("bob", "GET", "/v1/operations", params={"kind": "addon"})
    assert workflow_id in [op["workflow_id"] for op in victor_sees["operations"]]
    assert workflow_id not in [op["workflow_id"] for op in bob_sees["operations"]]

    async def waiting() -> dict[str, Any] | None:
        _, op = await api.call("alice", "GET", f"/v1/operations/{workflow_id}")
        waves = (op.get("progress") or {}).get("waves") or [{}, {}]
        return op if waves[1].get("status") == "awaiting-approval" else None

    await eventually(waiting, attempts=600)
    approve = f"/v1/operations/{workflow_id}/approve"
    approval = {"wave": "rest", "change_id": "CHG0030001", "comment": "CAB ok"}
    status, answer = await api.call("alice", "POST", approve, approval)
    assert status == 403 and "four-eyes" in one_line(answer), answer
    api.calls.append(("alice", "operations.approve"))
    status, answer = await api.call("bob", "POST", approve, approval)
    assert status == 404  # bob's teams have none of its clusters: not even visible
    carol = api.id_token("carol@example.com", groups=("a-approvers",))
    status, answer = await api.call(carol, "POST", approve, approval)
    assert status == 200 and answer["who"] == "carol@example.com", answer
    api.calls.append(("carol@example.com", "operations.approve"))

    report = await api_result(api, workflow_id)
    assert report.status == RunStatus.COMPLETED, report
    [recorded] = report.approvals
    assert recorded.who == "carol@example.com" and "CHG0030001" in recorded.note


async def api_result(api: Api, workflow_id: str) -> RolloutReport:
    async def done() -> RolloutReport | None:
        _, op = await api.call("root", "GET", f"/v1/operations/{workflow_id}")
        result = op.get("result")
        return RolloutReport.model_validate(result) if result else None

    return await eventually(done, attempts=600)


async def test_forged_expired_and_foreign_id_tokens_are_refused(api: Api) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "forged": (api.id_token("mallory", groups=("a-approvers",), key=other), "not valid"),
        "expired": (api.id_token("carol", exp=int(time.time()) - 600), "has expired"),
        "audience": (api.id_token("carol", aud="another-api"), "not for this API"),
        "issuer": (api.id_token("carol", iss="https://elsewhere"), "another issuer"),
        "garbage": ("a.b.c", "not valid"),
        "unknown token": ("flt_0000.nothing", "unknown or revoked"),
    }
    for name, (token, expected) in cases.items():
        status, answer = await api.call(token, "GET", "/v1/clusters")
        assert status == 401 and expected in one_line(answer), (name, answer)
        assert token not in answer["error"]


async def test_revoking_a_token_takes_effect_on_the_next_call(api: Api, flotilla: Run) -> None:
    status, created = await api.call("root", "POST", "/v1/admin/tokens", {"name": "dave"})
    assert status == 201, created
    dave = created["token"]
    assert (await api.call(dave, "GET", "/v1/clusters"))[0] == 200
    # Through the CLI, as an admin of the API.
    env = {"FLOTILLA_API": api.url, "FLOTILLA_TOKEN": api.tokens["root"]}
    result = await asyncio.to_thread(
        flotilla, "admin", "token", "revoke", created["info"]["id"], env=env
    )
    assert result.returncode == 0, result.stderr
    status, answer = await api.call(dave, "GET", "/v1/clusters")
    assert status == 401 and "unknown or revoked" in one_line(answer)
    status, answer = await api.call("alice", "POST", "/v1/admin/tokens", {"name": "eve"})
    assert status == 403 and "needs the admin role" in one_line(answer)
    onboard = {"name": "new-1", "credential": {"context": "lab-new-1"}}
    status, answer = await api.call("alice", "POST", "/v1/clusters", onboard)
    assert status == 403 and "needs the admin role" in one_line(answer)
    status, answer = await api.call("alice", "POST", f"/v1/clusters/{api.suite}-a0/offboard")
    assert status == 403 and "needs the admin role" in one_line(answer)


async def test_every_call_is_audited_and_outlives_temporal(api: Api, flotilla: Run) -> None:
    env = {"FLOTILLA_DATABASE_URL": api.database}

    async def events_delivered() -> bool:  # by the worker's sink, through the relay
        with contextlib.closing(Store(api.database)) as store:
            events = {(r.principal, r.action) for r in store.records() if r.key}
        return {
            ("alice", "event.started"),
            ("carol@example.com", "event.wave_approved"),
            ("alice", "event.finished"),
        } <= events

    await eventually(events_delivered)
    result = await asyncio.to_thread(flotilla, "audit", "export", "--format", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    records = read_export(result.stdout)
    seen = {(r.principal, r.action, r.result) for r in records}
    expected = {
        ("victor", "rollouts.start", "denied"),
        ("victor", "audit.read", "denied"),
        ("bob", "rollouts.start", "denied"),
        ("bob", "clusters.list", "ok"),
        ("alice", "rollouts.start", "ok"),
        ("alice", "operations.approve", "denied"),
        ("bob", "operations.approve", "refused"),
        ("carol@example.com", "operations.approve", "ok"),
        ("root", "tokens.create", "ok"),
        ("root", "tokens.revoke", "ok"),
        ("alice", "clusters.onboard", "denied"),
        ("dave", "clusters.list", "ok"),
        ("(unauthenticated)", "unrouted", "unauthenticated"),
    }
    assert expected <= seen, expected - seen
    start = next(r for r in records if r.action == "rollouts.start" and r.result == "ok")
    assert set(start.clusters) == {f"{api.suite}-a0", f"{api.suite}-a1"}
    path = Path(api.database).with_suffix(".jsonl")
    path.write_text(result.stdout)
    result = await asyncio.to_thread(flotilla, "audit", "verify", str(path))
    assert result.returncode == 0 and "no gaps" in result.stdout, result.stderr
    csv = await asyncio.to_thread(
        flotilla, "audit", "export", "--format", "csv", "-l", "team=b", env=env
    )
    assert csv.returncode == 0 and csv.stdout.startswith("seq,"), csv.stderr
    through_api = {"FLOTILLA_API": api.url, "FLOTILLA_TOKEN": api.tokens["root"]}
    listed = await asyncio.to_thread(flotilla, "audit", "list", "--since", "1h", env=through_api)
    assert listed.returncode == 0 and "carol@example.com" in listed.stdout, listed.stderr

    # A fresh, empty Temporal (as after a restart without its database): the trail is
    # all there, through a new API on the same database.
    empty = await start_dev_server()
    store = Store(api.database)
    try:
        policy = load_policy(write_policy(Path(api.database).with_suffix(".yaml"), api.suite))
        app = create_app(auth=Auth(store=store), client=empty.client, policy=policy, store=store)
        site, url = await start_site(app, host="127.0.0.1", port=0)
        try:
            again = Api(url, api.session, api.tokens, api.database, api.suite, api.issuer, api.key)
            status, listed = await again.call("root", "GET", "/v1/clusters")
            assert (status, listed["clusters"]) == (200, [])  # Temporal knows nothing
            status, page = await again.call("root", "GET", "/v1/audit")
            assert status == 200
            kept = [r["seq"] for r in page["records"]]
            assert kept[: len(records)] == [r.seq for r in records]
        finally:
            await site.cleanup()
    finally:
        store.close()
        await empty.shutdown()
