"""Notifications: a halted rollout sends exactly one message to a Slack-compatible webhook
(which fails the first attempt) and one CloudEvent (binary mode, per the HTTP binding),
and nothing for the events people need not hear about. Structured mode checked on its own."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from activities.notify import CloudEventsSink
from fleet.events import EventType, OperationEvent
from fleet.rollout_models import RunStatus
from starters.ops import current_details
from tests.ops.http_support import serving
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    eventually,
    make_fleet,
    start,
)


class Receiver:
    """Records POSTed bodies and headers; answers 500 to the first `fail_first` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.post("/hook", self._post)])
        return app

    async def _post(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500)
        self.posts.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")


async def test_halted_rollout_notifies_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack, events = Receiver(fail_first=1), Receiver()
    async with serving(slack.app()) as slack_url, serving(events.app()) as ce_url:
        monkeypatch.setenv("FLOTILLA_SLACK_WEBHOOK", "env:FLOTILLA_TEST_SLACK_URL")
        monkeypatch.setenv("FLOTILLA_TEST_SLACK_URL", f"{slack_url}/hook")
        monkeypatch.setenv("FLOTILLA_CLOUDEVENTS_URL", f"{ce_url}/hook")
        monkeypatch.setenv("FLOTILLA_CLOUDEVENTS_MODE", "binary")
        selector = await make_fleet(engine, [{"outcome": "fail"}, {}])
        handle = await start(engine, selector, "canary:1,rest")
        assert (await handle.result()).status == RunStatus.HALTED

        async def delivered() -> bool | None:
            return (len(slack.posts) >= 1 and len(events.posts) >= 1) or None

        await eventually(delivered)
        # the relay has delivered everything once it ends: nothing else may follow
        relay = engine.client.get_workflow_handle(f"events:{handle.id}")
        await eventually(lambda: _drained(relay))
    assert len(slack.posts) == 1 and slack.attempts == 2
    text = json.loads(slack.posts[0][1])["text"]
    assert f"{handle.id} halted" in text and "budget of 0" in text
    assert "Open in Temporal" in text
    assert len(events.posts) == 1
    headers, body = events.posts[0]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == f"{handle.id}/3"
    assert headers["ce-type"] == "io.flotilla.operation.halted"
    assert headers["ce-source"] == f"/flotilla/default/{handle.id}"
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["type"] == "halted" and data["workflow_id"] == handle.id
    assert "secret" not in body.decode().lower() and "token" not in body.decode().lower()


async def _drained(relay: Any) -> bool | None:
    return "pending nothing" in await current_details(relay) or None


async def test_structured_mode_is_one_json_cloudevent() -> None:
    events = Receiver()
    event = OperationEvent(
        key="rollout:k8s:x/7",
        type=EventType.AWAITING_APPROVAL,
        operation="k8s",
        workflow_id="rollout:k8s:x",
        wave="rest",
        at=datetime(2026, 12, 3, 20, 0, tzinfo=UTC),
    )
    async with serving(events.app()) as url:
        sink = CloudEventsSink(
            f"{url}/hook", "structured", {event.type}, ui_url="http://ui", namespace="prod"
        )
        await sink.deliver(event)
    headers, body = events.posts[0]
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    ce = json.loads(body)
    assert {k: ce[k] for k in ("specversion", "id", "type", "source", "time")} == {
        "specversion": "1.0",
        "id": "rollout:k8s:x/7",
        "type": "io.flotilla.operation.awaiting_approval",
        "source": "/flotilla/prod/rollout:k8s:x",
        "time": "2026-12-03T20:00:00Z",
    }
    assert ce["datacontenttype"] == "application/json" and ce["data"]["wave"] == "rest"
    assert ce["data"]["link"] == "http://ui/namespaces/prod/workflows/rollout%3Ak8s%3Ax"
