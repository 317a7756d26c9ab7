"""Offboarding against the lab: the baseline goes, the record becomes a tombstone, and a
later onboarding re-activates it."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from activities.inventory import fetch_records, get_record
from fleet.models import OffboardResult, OnboardResult, Phase, RecordsQuery
from starters.inventory import offboard, onboard
from tests.conftest import RunningWorker, lab_request
from tests.workflows.core_support import baseline_versions, eventually
from tests.workflows.lab_support import lab_cluster


async def test_offboard_then_onboard_again(worker: RunningWorker, lab) -> None:
    client, queue = worker.client, worker.task_queue
    with lab_cluster(lab) as name:
        await onboard(client, lab_request(lab, name), task_queue=queue)
        result = await offboard(client, name, task_queue=queue)
        assert isinstance(result, OffboardResult) and result.removal
        assert len(result.removal.removed) == 5
        assert result.record.phase == Phase.OFFBOARDED and result.record.lock is None

        async def baseline_gone() -> bool:  # a namespace terminates before it goes
            versions = await baseline_versions(str(lab.kubeconfig), f"lab-{name}")
            return all(v is None for v in versions.values())

        await eventually(baseline_gone)
        assert await fetch_records(client, RecordsQuery(names=[name])) == []
        kept = await fetch_records(client, RecordsQuery(names=[name], include_offboarded=True))
        assert [r.phase for r in kept] == [Phase.OFFBOARDED]

        again = await offboard(client, name, task_queue=queue)
        assert isinstance(again, OffboardResult) and again.note == "already offboarded"

        back = await onboard(client, lab_request(lab, name), task_queue=queue)
        assert isinstance(back, OnboardResult)
        assert back.record.phase == Phase.ACTIVE and len(back.baseline.created) == 5


async def test_offboard_unreachable_cluster(worker: RunningWorker, lab) -> None:
    """Without force the record stays (lock released, phase restored); with force it is
    retired and the note says the baseline was left behind."""
    client, queue = worker.client, worker.task_queue
    with lab_cluster(lab) as name:
        await onboard(client, lab_request(lab, name), task_queue=queue)
        lab.admin.fault(name, "flaky", rate=1.0, codes=[503])
        with pytest.raises(WorkflowFailureError) as failed:
            await offboard(client, name, task_queue=queue)
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.type == "BaselineFailed"
        record = await get_record(client, name)
        assert record and record.phase == Phase.ACTIVE and record.lock is None

        forced = await offboard(client, name, force=True, task_queue=queue)
        assert isinstance(forced, OffboardResult)
        assert forced.record.phase == Phase.OFFBOARDED and "left in place" in forced.note


async def test_offboard_unknown_cluster(worker: RunningWorker) -> None:
    with pytest.raises(WorkflowFailureError) as failed:
        await offboard(worker.client, "never-onboarded", task_queue=worker.task_queue)
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "UnknownCluster"


async def test_cancelled_offboard_ends_cancelled_and_releases(worker: RunningWorker, lab) -> None:
    """A cancel during a failing (retrying) step ends the run cancelled, not failed, and
    gives the lock back with the phase from before."""
    client, queue = worker.client, worker.task_queue
    with lab_cluster(lab) as name:
        await onboard(client, lab_request(lab, name), task_queue=queue)
        lab.admin.fault(name, "flaky", rate=1.0, codes=[503])  # removal keeps retrying
        handle = await offboard(client, name, wait=False, task_queue=queue)
        assert isinstance(handle, WorkflowHandle)

        async def locked_by_offboard() -> bool:
            record = await get_record(client, name)
            return bool(record and record.lock and record.lock.holder == handle.id)

        await eventually(locked_by_offboard)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert isinstance(failed.value.cause, CancelledError)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        record = await get_record(client, name)
        assert record and record.phase == Phase.ACTIVE and record.lock is None
