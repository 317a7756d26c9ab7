"""Records the histories test_replay.py replays. Skipped unless FLOTILLA_RECORD_HISTORIES=1:

    FLOTILLA_RECORD_HISTORIES=1 .venv/bin/pytest tests/replay/test_record.py

One scenario on the lab touches every core workflow and every entity update: onboarding,
a second name for the same cluster (refused, then admitted once the first is offboarded),
a health sweep, lock contention with a terminated (stale) holder, and offboarding.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.inventory import acquire_lock, release_lock
from fleet.ids import cluster_id, identity_id, offboard_id, onboard_id
from fleet.models import LockRelease, LockRequest, OnboardResult, SweepRequest, SweepResult
from starters.inventory import offboard, onboard
from tests.conftest import RunningWorker, lab_request
from tests.workflows.core_support import start_holder
from tests.workflows.lab_support import lab_cluster

HISTORIES = Path(__file__).parent / "histories"

pytestmark = pytest.mark.skipif(
    os.environ.get("FLOTILLA_RECORD_HISTORIES") != "1", reason="re-records replay histories"
)


async def save(client: Client, workflow_id: str, name: str) -> None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_record_histories(worker: RunningWorker, lab) -> None:
    client, queue = worker.client, worker.task_queue
    with lab_cluster(lab, env="prod", region="eu") as name:
        onboarded = await onboard(client, lab_request(lab, name), task_queue=queue)
        assert isinstance(onboarded, OnboardResult)
        copy = lab_request(lab, name).model_copy(update={"name": f"{name}-copy"})
        with pytest.raises(WorkflowFailureError):  # the same cluster under a second name
            await onboard(client, copy, task_queue=queue)
        sweep = await client.execute_workflow(
            "FleetHealthSweep",
            SweepRequest(selector="env=prod,region=eu"),
            id=f"sweep-{name}",
            task_queue=queue,
            result_type=SweepResult,
        )
        assert name in sweep.healthy
        crashed, successor = await start_holder(client), await start_holder(client)
        await acquire_lock(client, LockRequest(cluster=name, holder=crashed.id, operation="x"))
        await crashed.terminate("simulated crash")
        await acquire_lock(client, LockRequest(cluster=name, holder=successor.id, operation="y"))
        await release_lock(client, LockRelease(cluster=name, holder=successor.id))
        await successor.terminate()
        await offboard(client, name, task_queue=queue)
        await onboard(client, copy, task_queue=queue)  # the claim passes to the second name

        await save(client, onboard_id(name), "Onboard")
        await save(client, offboard_id(name), "Offboard")
        await save(client, f"sweep-{name}", "FleetHealthSweep")
        await save(client, cluster_id(name), "ClusterEntity")
        await save(client, identity_id(onboarded.record.uid), "ClusterIdentity")
