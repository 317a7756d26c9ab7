"""Maintenance windows on the time-skipping server: the run waits durably (a timer) for
each cluster's window instead of failing. No Updates here (that server has none)."""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.events import deliver_event, relay_event
from fleet import search
from fleet.models import ClusterRecord, CredentialRef, Phase, RecordsQuery
from fleet.rollout_models import (
    ClusterNames,
    ClusterStatus,
    RolloutInput,
    RolloutOptions,
    RolloutReport,
    RolloutSpec,
    RunStatus,
)
from fleet.waves import build_plan
from fleet.windows import WINDOW_LABEL, parse_window
from tests.workflows.rollout_support import register_scripted
from tests.workflows.scripted_child import ScriptedCluster
from tests.workflows.scripted_target import ScriptedTarget
from workflows.event_relay import EventRelay
from workflows.rollout import Rollout

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"


def records(window_label: str) -> list[ClusterRecord]:
    return [
        ClusterRecord(
            name=name,
            labels=labels,
            credential=CredentialRef(context=name),
            phase=Phase.ACTIVE,
        )
        for name, labels in [("a-global", {}), ("b-own-window", {WINDOW_LABEL: window_label})]
    ]


def window_at(start: timedelta) -> str:
    minutes = int(start.total_seconds() // 60) % 1440
    end = (minutes + 60) % 1440
    return f"daily.{minutes // 60:02d}{minutes % 60:02d}-{end // 60:02d}{end % 60:02d}"


async def test_waits_for_each_clusters_window() -> None:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter
    ) as env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
                    for key in search.ALL
                },
            )
        )
        now = await env.get_current_time()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        since_midnight = now - midnight
        rollout_window = window_at(since_midnight + timedelta(hours=3))
        own_window = window_at(since_midnight + timedelta(hours=5))
        inventory = records(own_window)

        @activity.defn(name="list_cluster_names")
        async def list_cluster_names(query: RecordsQuery) -> ClusterNames:
            """The inventory as planned (this server has no Updates for real entities)."""
            return ClusterNames(names=[r.name for r in inventory])

        register_scripted()
        spec = RolloutSpec(
            id=uuid.uuid4().hex[:8],
            waves=["rest"],
            operation=ScriptedTarget(),
            options=RolloutOptions(health_gates=False, window=rollout_window),
        )
        plan = build_plan(spec, inventory)
        queue = f"window-{uuid.uuid4().hex[:6]}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[Rollout, ScriptedCluster, EventRelay],
            activities=[list_cluster_names, relay_event, deliver_event],
        ):
            report = await env.client.execute_workflow(
                "Rollout",
                RolloutInput(plan=plan),
                id=spec.workflow_id,
                task_queue=queue,
                result_type=RolloutReport,
            )
    assert report.status == RunStatus.COMPLETED
    by_name = {o.name: o for o in report.outcomes}
    for name, window in (("a-global", rollout_window), ("b-own-window", own_window)):
        outcome = by_name[name]
        assert outcome.status == ClusterStatus.SUCCEEDED
        assert outcome.started_at and parse_window(window).is_open(outcome.started_at)
    first, second = by_name["a-global"].started_at, by_name["b-own-window"].started_at
    assert first and second and now + timedelta(hours=2, minutes=59) <= first < second
