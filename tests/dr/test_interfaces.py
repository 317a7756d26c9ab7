"""`flotilla dr` and the webhook's DR routes on the dev server (no lab): bad input refused
with one line (CLI exit 2 for usage, 1 otherwise; the API a 4xx with the reason), nothing
started; an idempotent start; the OpenAPI schema lists the routes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp
import pytest
import yaml
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from activities.dr_records import get_app, register_policy
from fleet.dr import drill_schedule_id
from starters.api import create_app, start_site
from starters.api_auth import Auth
from starters.cli_dr import lab_policy
from tests.conftest import RunningWorker
from tests.starters.conftest import ARun, aflotilla, assert_one_line_error, cli_env, flotilla
from tests.workflows.core_support import unique

__all__ = ["aflotilla", "cli_env", "flotilla"]  # fixtures
TOKEN = "dr-test-token"


async def test_cli_refuses_bad_input_in_one_line(
    temporal_worker: RunningWorker, aflotilla: ARun, temporal_address: str, tmp_path: Path
) -> None:
    client, queue = temporal_worker.client, temporal_worker.task_queue
    app = unique("app")
    await register_policy(client, lab_policy(app, ["eu", "us"]), task_queue=queue)
    env = {"FLOTILLA_TASK_QUEUE": queue}

    async def cli(*args: str):  # type: ignore[no-untyped-def]
        return await aflotilla(*args, address=temporal_address, env=env)

    line = assert_one_line_error(await cli("dr", "failover", unique("nope")), 1)
    assert "unknown application" in line
    line = assert_one_line_error(await cli("dr", "failover", app, "--to", "ap"), 2)
    assert "not a cluster of" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"app": app, "members": []}))
    line = assert_one_line_error(await cli("dr", "register", str(bad)), 2)
    assert "dns: Field required" in line
    line = assert_one_line_error(await cli("dr", "register", "--lab", "shop"), 2)
    assert "expected APP=PRIMARY,STANDBY" in line
    shown = await cli("dr", "show", app)
    assert shown.returncode == 0 and "primary" in shown.stdout and "eu" in shown.stdout
    state = await get_app(client, app)
    assert state is not None and state.epoch == 0 and state.runs == []


async def test_webhook_dr_routes(temporal_worker: RunningWorker) -> None:
    client, queue = temporal_worker.client, temporal_worker.task_queue
    app = unique("app")
    await register_policy(client, lab_policy(app, ["eu", "us"]), task_queue=queue)
    web_app = create_app(auth=Auth(token=TOKEN), client=client, task_queue=queue)
    runner, url = await start_site(web_app, host="127.0.0.1", port=0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as session:

            async def call(method: str, path: str, body: object = None, key: str = ""):  # type: ignore[no-untyped-def]
                headers = {**auth, **({"Idempotency-Key": key} if key else {})}
                async with session.request(method, url + path, json=body, headers=headers) as r:
                    return r.status, await r.json()

            status, answer = await call("POST", f"/v1/dr/{app}/failover", {"who": "ci"})
            assert status == 400 and "Idempotency-Key" in answer["error"]
            status, answer = await call(
                "POST", f"/v1/dr/{unique('nope')}/failover", {"who": "ci"}, key="k1"
            )
            assert status == 404 and "unknown application" in answer["error"]
            status, answer = await call(
                "POST", f"/v1/dr/{app}/failover", {"who": "ci", "target": "ap"}, key="k1"
            )
            assert status == 422 and "not a cluster of" in answer["error"]
            status, answer = await call("POST", f"/v1/dr/{app}/explode", {"who": "ci"}, key="k")
            assert status == 404
            status, answer = await call("POST", f"/v1/dr/{app}/drill", {"force": "maybe"}, key="k")
            assert status == 422

            # a start (its clusters are not in the inventory, so it fails at the lock)
            status, started = await call(
                "POST", f"/v1/dr/{app}/switchover", {"who": "ci"}, key="k2"
            )
            assert status == 201 and started["workflow_id"] == f"switchover:{app}:k2", started
            status, again = await call("POST", f"/v1/dr/{app}/switchover", {"who": "ci"}, key="k2")
            assert status == 200 and again["created"] is False
            with contextlib.suppress(WorkflowFailureError):
                await client.get_workflow_handle(started["workflow_id"]).result()
            status, op = await call("GET", f"/v1/dr/operations/{started['workflow_id']}")
            assert status == 200 and op["status"] == "failed", op
            assert op["progress"]["steps"][0]["ok"] is False
            status, record = await call("GET", f"/v1/dr/{app}")
            assert (
                status == 200
                and record["primary"] == "eu"
                and record["runs"][0]["outcome"] == "failed"
            )
            status, schema = await call("GET", "/openapi.json")
            assert {
                "/v1/dr/{app}/{action}",
                "/v1/dr/{app}",
                "/v1/dr/operations/{workflow_id}",
            } <= set(schema["paths"])
    finally:
        await runner.cleanup()


async def test_drill_schedule(temporal_worker: RunningWorker) -> None:
    from starters.cli_dr import ensure_drill_schedule

    client, queue = temporal_worker.client, temporal_worker.task_queue
    app = unique("app")
    await ensure_drill_schedule(client, app, 7 * 86400, task_queue=queue)
    await ensure_drill_schedule(client, app, 86400, task_queue=queue)  # an update
    handle = client.get_schedule_handle(drill_schedule_id(app))
    described = await handle.describe()
    spec = described.schedule.spec
    assert [i.every.total_seconds() for i in spec.intervals] == [86400]
    await ensure_drill_schedule(client, app, 0, task_queue=queue)
    with pytest.raises(RPCError):
        await handle.describe()
