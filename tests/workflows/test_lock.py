"""The operation lock of a cluster entity: grant, refusal naming the holder, waiting,
and breaking the lock of a holder whose workflow is gone."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.exceptions import ApplicationError

from activities.inventory import acquire_lock, get_record, release_lock
from fleet.models import LockRelease, LockRequest, Phase
from tests.conftest import RunningWorker
from tests.workflows.core_support import new_cluster, start_holder


def request(cluster: str, holder: str, **kw: object) -> LockRequest:
    return LockRequest(cluster=cluster, holder=holder, operation="test", **kw)


async def test_grant_is_idempotent_for_the_same_holder(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    holder = await start_holder(client)
    first = await acquire_lock(client, request(name, holder.id, phase=Phase.UPGRADING))
    again = await acquire_lock(client, request(name, holder.id))
    assert again.acquired_at == first.acquired_at
    record = await get_record(client, name)
    assert record and record.lock and record.lock.holder == holder.id
    assert record.phase == Phase.UPGRADING
    released = await release_lock(client, LockRelease(cluster=name, holder=holder.id))
    assert released and released.lock is None and released.phase == Phase.ACTIVE
    # Releasing again, or by someone else, changes nothing.
    assert await release_lock(client, LockRelease(cluster=name, holder="someone-else"))


async def test_release_without_phase_restores_the_phase_before_the_lock(
    temporal_worker: RunningWorker,
) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    setup, upgrade, addon = [await start_holder(client) for _ in range(3)]
    await acquire_lock(client, request(name, setup.id))
    await release_lock(client, LockRelease(cluster=name, holder=setup.id, phase=Phase.MAINTENANCE))
    await acquire_lock(client, request(name, upgrade.id, phase=Phase.UPGRADING))
    released = await release_lock(client, LockRelease(cluster=name, holder=upgrade.id, phase=None))
    assert released and released.lock is None and released.phase == Phase.MAINTENANCE
    await acquire_lock(client, request(name, addon.id))  # no phase change while held
    released = await release_lock(client, LockRelease(cluster=name, holder=addon.id, phase=None))
    assert released and released.phase == Phase.MAINTENANCE


async def test_release_records_the_holders_version(temporal_worker: RunningWorker) -> None:
    """A change's version is written with its release; a release by anyone else (or a
    repeated one) records nothing."""
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    holder = await start_holder(client)
    await acquire_lock(client, request(name, holder.id, phase=Phase.UPGRADING))
    stranger = LockRelease(cluster=name, holder="someone-else", phase=None, version="v9.9.9")
    untouched = await release_lock(client, stranger)
    assert untouched and untouched.version != "v9.9.9" and untouched.lock is not None
    mine = LockRelease(cluster=name, holder=holder.id, phase=None, version="v1.31.2")
    released = await release_lock(client, mine)
    assert released and released.version == "v1.31.2" and released.phase == Phase.ACTIVE
    assert released.lock is None


async def test_refused_naming_the_holder(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    holder = await start_holder(client)
    await acquire_lock(client, request(name, holder.id))
    with pytest.raises(ApplicationError) as refused:
        await acquire_lock(client, request(name, "rollout:k8s:other"))
    assert refused.value.type == "ClusterLocked"
    assert holder.id in refused.value.message
    record = await get_record(client, name)
    assert record and record.lock and record.lock.holder == holder.id


async def test_waiter_is_granted_after_release(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    first, second = await start_holder(client), await start_holder(client)
    await acquire_lock(client, request(name, first.id))
    waiting = asyncio.create_task(acquire_lock(client, request(name, second.id, wait=True)))
    await asyncio.sleep(0.5)  # let the waiting update reach the entity (not an assertion)
    record = await get_record(client, name)
    assert record and record.lock and record.lock.holder == first.id
    await release_lock(client, LockRelease(cluster=name, holder=first.id))
    grant = await asyncio.wait_for(waiting, 30)
    assert grant.holder == second.id
    record = await get_record(client, name)
    assert record and record.lock and record.lock.holder == second.id


async def test_stale_holder_broken_on_contention(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    crashed, next_op = await start_holder(client), await start_holder(client)
    await acquire_lock(client, request(name, crashed.id, phase=Phase.UPGRADING))
    await crashed.terminate("simulated crash")
    grant = await acquire_lock(client, request(name, next_op.id))
    assert grant.holder == next_op.id
    record = await get_record(client, name)
    assert record and record.lock and record.lock.holder == next_op.id
    assert crashed.id in record.last_lock_break and "TERMINATED" in record.last_lock_break
    assert record.phase == Phase.ACTIVE  # the phase from before the crashed operation


async def test_stale_holder_broken_by_periodic_check(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue, lock_check_seconds=1)
    crashed, waiter = await start_holder(client), await start_holder(client)
    await acquire_lock(client, request(name, crashed.id))
    waiting = asyncio.create_task(acquire_lock(client, request(name, waiter.id, wait=True)))
    await asyncio.sleep(0.5)
    await crashed.terminate("simulated crash")
    grant = await asyncio.wait_for(waiting, 60)
    assert grant.holder == waiter.id
    record = await get_record(client, name)
    assert record and "periodic check" in record.last_lock_break


async def test_unknown_cluster(temporal_worker: RunningWorker) -> None:
    with pytest.raises(ApplicationError) as refused:
        await acquire_lock(temporal_worker.client, request("no-such-cluster", "op"))
    assert refused.value.type == "UnknownCluster"
