"""The `ClusterEntity` inventory record: registration, validators, search attributes,
health readings, retirement and re-activation, continue-as-new."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.inventory import fetch_records, get_record, register, release_lock
from fleet.ids import cluster_id
from fleet.models import (
    CredentialRef,
    FactsUpdate,
    Health,
    HealthReport,
    LockRelease,
    Phase,
    RecordsQuery,
    RegisterRequest,
    RetireRequest,
)
from tests.conftest import RunningWorker, start_dev_server
from tests.workflows.core_support import eventually, new_cluster, unique
from worker import build_worker


async def update(client: Client, cluster: str, name: str, arg: object) -> object:
    return await client.get_workflow_handle(cluster_id(cluster)).execute_update(name, arg)


async def accepted_updates(client: Client, cluster: str) -> int:
    history = await client.get_workflow_handle(cluster_id(cluster)).fetch_history()
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    return sum(1 for e in history.events if e.event_type == accepted)


async def test_register_sets_record_and_search_attributes(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    team = unique("team")
    name = await new_cluster(
        client, temporal_worker.task_queue, labels={"env": "prod", "region": "eu", "team": team}
    )
    record = await get_record(client, name)
    assert record is not None
    assert record.phase == Phase.ACTIVE and record.onboarded_at is not None
    assert record.labels["team"] == team

    query = f'FlotillaEnv="prod" AND FlotillaRegion="eu" AND FlotillaLabels="team={team}"'

    async def listed() -> list[str]:
        return [wf.id async for wf in client.list_workflows(query)]

    assert await eventually(listed) == [cluster_id(name)]
    by_selector = await eventually(
        lambda: fetch_records(client, RecordsQuery(selector=f"team={team},env in (prod)"))
    )
    assert [r.name for r in by_selector] == [name]


async def test_validators_reject_bad_updates(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    before = await accepted_updates(client, name)
    bad = [
        ("update_facts", FactsUpdate(cluster=name, phase=Phase.OFFBOARDED), "cannot move"),
        ("update_facts", FactsUpdate(cluster=name, labels={"bad key!": "x"}), "bad label"),
        ("update_facts", FactsUpdate(cluster="other", version="v1"), "not 'other'"),
        ("retire", RetireRequest(cluster=name, holder="op"), "must be offboarding"),
        ("release_lock", LockRelease(cluster=name, holder=""), "holder"),
    ]
    for update_name, arg, message in bad:
        with pytest.raises(Exception) as rejected:
            await update(client, name, update_name, arg)
        assert message in str(rejected.value.__cause__), update_name
    # Rejected updates leave no trace in history.
    assert await accepted_updates(client, name) == before
    # A release by a non-holder is accepted and does nothing.
    await release_lock(client, LockRelease(cluster=name, holder="not-the-holder"))
    record = await get_record(client, name)
    assert record and record.phase == Phase.ACTIVE


async def test_health_readings(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    now = datetime.now(UTC)
    reading = HealthReport(
        cluster=name,
        health=Health.DEGRADED,
        reason="1/3 nodes not Ready",
        api_ready=True,
        nodes_total=3,
        nodes_ready=2,
        version="v1.30.6",
        checked_at=now,
    )
    await update(client, name, "record_health", reading)
    older = reading.model_copy(update={"health": Health.HEALTHY, "checked_at": now - timedelta(1)})
    await update(client, name, "record_health", older)
    record = await get_record(client, name)
    assert record and record.health == Health.DEGRADED and record.node_count == 3
    assert record.version == "v1.30.6"

    async def listed() -> list[str]:
        query = f'FlotillaHealth="degraded" AND WorkflowId="{cluster_id(name)}"'
        return [wf.id async for wf in client.list_workflows(query)]

    assert await eventually(listed)


async def test_retire_then_register_reactivates(temporal_worker: RunningWorker) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue, labels={"env": "dev"})
    await update(
        client,
        name,
        "acquire_lock",
        {"cluster": name, "holder": "op-x", "operation": "offboard", "phase": "offboarding"},
    )
    await update(client, name, "retire", RetireRequest(cluster=name, holder="op-x"))
    record = await get_record(client, name)
    assert record and record.phase == Phase.OFFBOARDED and record.lock is None
    with pytest.raises(Exception) as refused:
        await update(
            client, name, "acquire_lock", {"cluster": name, "holder": "y", "operation": "z"}
        )
    assert "offboarded" in str(refused.value.__cause__)
    assert name not in [r.name for r in await fetch_records(client, RecordsQuery(names=[name]))]

    registration = await register(
        client,
        RegisterRequest(
            name=name, credential=CredentialRef(context="c"), labels={"env": "dev"}, holder="op-y"
        ),
        task_queue=temporal_worker.task_queue,
    )
    assert registration.previous_phase == Phase.OFFBOARDED
    assert registration.record.phase == Phase.ONBOARDING
    assert registration.record.lock and registration.record.lock.holder == "op-y"


async def test_register_refused_while_another_operation_holds_the_lock(
    temporal_worker: RunningWorker,
) -> None:
    client = temporal_worker.client
    name = await new_cluster(client, temporal_worker.task_queue)
    holder = await client.start_workflow("IdleOperation", id=unique("op"), task_queue=unique("q"))
    await update(
        client, name, "acquire_lock", {"cluster": name, "holder": holder.id, "operation": "x"}
    )
    with pytest.raises(ApplicationError) as refused:
        await register(
            client,
            RegisterRequest(name=name, credential=CredentialRef(context="c"), holder="onboard:x"),
            task_queue=temporal_worker.task_queue,
        )
    assert refused.value.type == "ClusterLocked" and holder.id in refused.value.message


async def test_continue_as_new_keeps_the_record() -> None:
    env = await start_dev_server(
        "--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"
    )
    try:
        client = env.client
        queue = unique("can")
        async with build_worker(client, task_queue=queue):
            name = await new_cluster(client, queue, labels={"env": "dev"})
            first_run = (await client.get_workflow_handle(cluster_id(name)).describe()).run_id
            for i in range(30):
                await update(
                    client,
                    name,
                    "update_facts",
                    FactsUpdate(cluster=name, node_count=i, version=f"v1.30.{i}"),
                )
            described = await client.get_workflow_handle(cluster_id(name)).describe()
            assert described.run_id != first_run
            record = await get_record(client, name)
            assert record and record.node_count == 29 and record.labels == {"env": "dev"}
            assert record.phase == Phase.ACTIVE
    finally:
        await env.shutdown()
