"""No token, certificate key or other lab secret may appear anywhere in workflow history:
inputs, results, errors, memos, search attributes, details."""

from __future__ import annotations

from temporalio.client import Client

from fleet.models import SweepRequest, SweepResult
from tests.conftest import RunningWorker
from tests.workflows.core_support import unique


def needles(secret: str) -> list[bytes]:
    """The secret itself and, for PEM blocks, each base64 line (JSON escapes newlines)."""
    found = [secret.encode()]
    for line in secret.splitlines():
        line = line.strip()
        if len(line) >= 16 and not line.startswith("-----"):
            found.append(line.encode())
    return found


async def all_histories(client: Client) -> dict[str, bytes]:
    histories: dict[str, bytes] = {}
    async for wf in client.list_workflows():
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        raw = b"".join(e.SerializeToString() for e in history.events) + history.to_json().encode()
        histories[f"{wf.id}/{wf.run_id}"] = raw
    return histories


async def test_no_secret_in_any_history(worker: RunningWorker, lab, onboarded_fleet: dict) -> None:
    client = worker.client
    await client.execute_workflow(
        "FleetHealthSweep",
        SweepRequest(),
        id=unique("sweep"),
        task_queue=worker.task_queue,
        result_type=SweepResult,
    )
    secrets = list(lab.secrets())
    assert secrets, "the lab reported no secrets to look for"
    histories = await all_histories(client)
    kinds = {key.split(":")[0] for key in histories}
    assert {"cluster", "onboard"} <= kinds
    leaks = [
        (key, secret[:12] + "...")
        for key, raw in histories.items()
        for secret in secrets
        if any(n in raw for n in needles(secret))
    ]
    assert not leaks, leaks
