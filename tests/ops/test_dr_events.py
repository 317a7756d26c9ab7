"""A DR switchover on the lab started with a change reference: the change hears it start
and finish exactly once (the local ServiceNow fails first attempts), and chat hears both."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.dr import DrOutcome, DrRequest, OpKind
from tests.conftest import RunningWorker
from tests.dr.support import run, seed_app
from tests.ops.http_support import serving
from tests.ops.servicenow_fake import FakeServiceNow
from tests.ops.test_notify import Receiver
from tests.workflows.rollout_support import eventually


async def test_switchover_updates_its_change_and_notifies(
    worker: RunningWorker, lab: Any, onboarded_fleet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sn, slack = FakeServiceNow(), Receiver()
    sn.add_change("CHG0040001", state="-2")
    async with serving(sn.app()) as sn_url, serving(slack.app()) as slack_url:
        monkeypatch.setenv("FLOTILLA_SERVICENOW_URL", sn_url)
        monkeypatch.setenv("FLOTILLA_SERVICENOW_AUTH", "env:FLOTILLA_TEST_SN_AUTH")
        monkeypatch.setenv("FLOTILLA_TEST_SN_AUTH", f"{sn.user}:{sn.password}")
        monkeypatch.setenv("FLOTILLA_SLACK_WEBHOOK", "env:FLOTILLA_TEST_SLACK_URL")
        monkeypatch.setenv("FLOTILLA_TEST_SLACK_URL", f"{slack_url}/hook")
        app = await seed_app(lab, worker, ["eu-prod-1", "us-prod-1"])
        request = DrRequest(app=app.name, who="carol", change="servicenow:CHG0040001")
        workflow_id, result = await run(worker, OpKind.SWITCHOVER, request)
        assert result.outcome == DrOutcome.SUCCEEDED, result.progress.reason

        async def told() -> list[str] | None:
            notes = sn.notes("CHG0040001")
            return notes if len(notes) == 2 and len(slack.posts) == 2 else None

        notes = await eventually(told)
    assert notes[0].startswith(f"[flotilla {workflow_id}/1] Flotilla started dr:switchover")
    assert "by carol" in notes[0] and "eu-prod-1 -> us-prod-1" in notes[0]
    assert notes[1].startswith(f"[flotilla {workflow_id}/2] Finished: succeeded")
    assert all(sn.attempts[n] == 2 for n in notes)  # refused once, written once, never twice
    assert next(c for c in sn.changes if c["number"] == "CHG0040001")["state"] == "0"
    texts = [json.loads(body)["text"] for _, body in slack.posts]
    assert f"{workflow_id} switchover started" in texts[0]
    assert "switchover finished: succeeded" in texts[1]
