"""The rollout engine's failure budget, approval gate, pause/resume and membership
handling with the real AddonUpgrade child on the lab (test_rollout_engine.py covers the
same logic with scripted children). Each test adds its own lab clusters labelled with a
unique suite, so the session's default fleet is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.inventory import get_record
from activities.kube import api_client
from fleet.addon_target import AddonTarget
from fleet.models import CredentialRef, Phase, RecordsQuery
from fleet.rollout_models import (
    ApproveRequest,
    ClusterStatus,
    ControlRequest,
    RolloutOptions,
    RolloutProgress,
    RolloutReport,
    RolloutSpec,
    RunStatus,
    WaveStatus,
)
from starters import rollouts
from starters.inventory import list_clusters, offboard, onboard, onboard_many
from tests.conftest import RunningWorker, lab_request
from tests.workflows.rollout_support import eventually

OLD = "registry.k8s.io/coredns/coredns:v1.11.3"  # the lab's seeded coredns image
NEW = "registry.k8s.io/coredns/coredns:v1.11.4"
COREDNS = AddonTarget(name="coredns", image=NEW)
LABELS = {"env": "prod", "region": "eu", "provider": "aws"}


@dataclass
class Suite:
    """Lab clusters labelled `suite=<id>`, onboarded; `add` may grow it mid-test."""

    worker: RunningWorker
    lab: Any
    id: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:6]}")
    names: list[str] = field(default_factory=list)

    @property
    def selector(self) -> str:
        return f"suite={self.id}"

    @property
    def queue(self) -> str:
        return self.worker.task_queue

    async def add(self, count: int) -> list[str]:
        """Adds `count` clusters to the lab, onboards them and waits until listed."""
        names = [f"{self.id}-{len(self.names) + i}" for i in range(count)]
        for name in names:
            self.names.append(name)  # before adding: cleanup covers a partial add
            self.lab.admin.add_cluster(name, {**LABELS, "suite": self.id})
        requests = [lab_request(self.lab, name) for name in names]
        results = await onboard_many(self.worker.client, requests, task_queue=self.queue)
        assert not [r for r in results if isinstance(r, BaseException)], results
        await eventually(lambda: self.listed_as(lambda listed: set(names) <= listed))
        return names

    async def listed_as(self, predicate: Callable[[set[str]], bool]) -> bool:
        """Whether the names the inventory lists for the suite's selector satisfy it."""
        records = await list_clusters(self.worker.client, RecordsQuery(selector=self.selector))
        return predicate({r.name for r in records})


@contextlib.asynccontextmanager
async def suite(worker: RunningWorker, lab: Any, count: int) -> AsyncIterator[Suite]:
    """`count` fresh clusters; every cluster of the suite leaves the lab afterwards."""
    fleet = Suite(worker, lab)
    try:
        await fleet.add(count)
        yield fleet
    finally:
        for name in fleet.names:
            with contextlib.suppress(Exception):
                lab.admin.clear(name)
            with contextlib.suppress(Exception):
                lab.admin.remove_cluster(name)


async def start(fleet: Suite, waves: str, **options: Any) -> WorkflowHandle[Any, RolloutReport]:
    spec = RolloutSpec(
        id=uuid.uuid4().hex[:8],
        selector=fleet.selector,
        waves=[waves],
        operation=COREDNS,
        options=RolloutOptions(**options),
    )
    plan = await rollouts.make_plan(fleet.worker.client, spec)
    assert plan.cluster_names() == fleet.names
    return await rollouts.start_rollout(fleet.worker.client, plan, task_queue=fleet.queue)


async def wait_for(
    fleet: Suite, handle: WorkflowHandle[Any, Any], predicate: Callable[[RolloutProgress], bool]
) -> RolloutProgress:
    """Polls the run's progress (its latest run: it continues-as-new between waves)."""

    async def probe() -> RolloutProgress | None:
        progress = await rollouts.progress(fleet.worker.client, handle.id)
        return progress if predicate(progress) else None

    return await eventually(probe)


def statuses(progress: RolloutProgress | RolloutReport) -> list[ClusterStatus]:
    if isinstance(progress, RolloutReport):
        return [o.status for o in progress.outcomes]
    return [c.status for c in progress.clusters]


async def images(lab: Any, names: list[str]) -> list[str]:
    """The coredns image each cluster's Deployment asks for, read through the kubeconfig."""

    def read(name: str) -> str:
        api = api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{name}"))
        deployment: Any = k8s.AppsV1Api(api).read_namespaced_deployment("coredns", "kube-system")
        return str(deployment.spec.template.spec.containers[0].image)

    return [await asyncio.to_thread(read, name) for name in names]


async def never_started(fleet: Suite, rollout: str, names: list[str]) -> None:
    """No child workflow was ever started for these clusters."""
    for name in names:
        child = fleet.worker.client.get_workflow_handle(f"{rollout}/{name}")
        with pytest.raises(RPCError) as missing:
            await child.describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND, name


async def assert_unlocked(fleet: Suite, names: list[str]) -> None:
    for name in names:
        record = await get_record(fleet.worker.client, name)
        assert record and record.lock is None and record.phase == Phase.ACTIVE, record


async def refused(call: Awaitable[object], reason: str) -> None:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await call
    assert reason in str(failed.value.cause)


@pytest.mark.parametrize(
    ("budgets", "exceeded"),
    [
        ({"failure_budget": "1"}, "2 failures exceed the run's budget of 1"),
        (
            {"failure_budget": "3", "wave_failure_budget": "1"},
            "2 failures exceed wave rest's budget of 1",
        ),
    ],
    ids=["run-budget", "wave-budget"],
)
async def test_budget_absorbs_one_failing_cluster_and_halts_on_the_second(
    worker: RunningWorker, lab: Any, budgets: dict[str, str], exceeded: str
) -> None:
    async with suite(worker, lab, 4) as fleet:
        dark, ok, sick, last = fleet.names
        lab.admin.fault(dark, "dark", mode="refuse")  # unreachable, counted: fail-unreachable
        lab.admin.fault(sick, "nodes-not-ready")  # degraded before the change
        handle = await start(fleet, "rest", max_concurrent=1, skip_unreachable=False, **budgets)
        report = await handle.result()
        lab.admin.clear(dark)
        assert report.status == RunStatus.HALTED
        assert exceeded in report.halt_reason and f"last: {sick}" in report.halt_reason
        assert statuses(report) == [
            ClusterStatus.FAILED,
            ClusterStatus.SUCCEEDED,
            ClusterStatus.FAILED,
            ClusterStatus.NOT_STARTED,
        ]
        outcomes = {o.name: o for o in report.outcomes}
        assert outcomes[dark].reason.startswith("unreachable:"), outcomes[dark]
        assert outcomes[sick].reason.startswith("degraded before the change"), outcomes[sick]
        assert outcomes[ok].from_version == OLD and outcomes[ok].to_version == NEW
        await never_started(fleet, handle.id, [last])
        assert await images(lab, fleet.names) == [OLD, NEW, OLD, OLD]
        await assert_unlocked(fleet, fleet.names)


async def test_approval_gates_wave_two_and_is_recorded(worker: RunningWorker, lab: Any) -> None:
    async with suite(worker, lab, 3) as fleet:
        canary, *wave_two = fleet.names
        lab.admin.fault(canary, "slow", latency_ms=200)  # keeps the canary observable
        handle = await start(fleet, "canary:1,rest", approve_between=True)
        await wait_for(fleet, handle, lambda p: p.clusters[0].status == ClusterStatus.RUNNING)
        await refused(
            rollouts.control(
                worker.client, handle.id, "approve", ApproveRequest(who="ana", wave="rest")
            ),
            "is not waiting for an approval",
        )
        lab.admin.clear(canary)
        p = await wait_for(
            fleet, handle, lambda p: p.waves[1].status == WaveStatus.AWAITING_APPROVAL
        )
        assert statuses(p) == [
            ClusterStatus.SUCCEEDED,
            ClusterStatus.PENDING,
            ClusterStatus.PENDING,
        ]
        await never_started(fleet, handle.id, wave_two)
        assert await images(lab, fleet.names) == [NEW, OLD, OLD]
        await rollouts.control(
            worker.client,
            handle.id,
            "approve",
            ApproveRequest(who="ana", wave="rest", note="canary fine"),
        )
        report = await handle.result()
        assert report.status == RunStatus.COMPLETED
        assert statuses(report) == [ClusterStatus.SUCCEEDED] * 3
        assert [(a.wave, a.who, a.note) for a in report.approvals] == [(1, "ana", "canary fine")]
        assert [(c.action, c.who) for c in report.controls] == [("approve", "ana")]
        assert all(
            o.started_at and o.started_at >= report.approvals[0].at for o in report.outcomes[1:]
        )
        assert await images(lab, fleet.names) == [NEW] * 3
        await assert_unlocked(fleet, fleet.names)


async def test_pause_holds_new_clusters_until_resume(worker: RunningWorker, lab: Any) -> None:
    async with suite(worker, lab, 3) as fleet:
        first, *rest = fleet.names
        lab.admin.fault(first, "slow", latency_ms=300)  # the pause lands while it runs
        handle = await start(fleet, "rest", max_concurrent=1)
        await wait_for(fleet, handle, lambda p: p.clusters[0].status == ClusterStatus.RUNNING)
        await rollouts.control(worker.client, handle.id, "pause", ControlRequest(who="bo"))
        # The running cluster finishes; without the pause the next one would start in the
        # same workflow task, so the progress that shows it done shows the rest unstarted.
        p = await wait_for(fleet, handle, lambda p: p.clusters[0].status == ClusterStatus.SUCCEEDED)
        lab.admin.clear(first)
        assert p.paused and p.status == RunStatus.PAUSED
        assert statuses(p)[1:] == [ClusterStatus.PENDING] * 2
        await never_started(fleet, handle.id, rest)
        assert await images(lab, fleet.names) == [NEW, OLD, OLD]
        await rollouts.control(worker.client, handle.id, "resume", ControlRequest(who="bo"))
        report = await handle.result()
        assert report.status == RunStatus.COMPLETED
        assert statuses(report) == [ClusterStatus.SUCCEEDED] * 3
        assert [(c.action, c.who) for c in report.controls] == [("pause", "bo"), ("resume", "bo")]
        assert await images(lab, fleet.names) == [NEW] * 3
        await assert_unlocked(fleet, fleet.names)


async def test_joined_cluster_is_not_rolled_and_left_ones_are_skipped(
    worker: RunningWorker, lab: Any
) -> None:
    async with suite(worker, lab, 4) as fleet:
        canary, offboarded, relabelled, last = fleet.names
        handle = await start(fleet, "canary:1,rest", approve_between=True)
        await wait_for(fleet, handle, lambda p: p.waves[1].status == WaveStatus.AWAITING_APPROVAL)
        (joined,) = await fleet.add(1)
        await offboard(worker.client, offboarded, task_queue=fleet.queue)
        moved = lab_request(lab, relabelled, **LABELS, suite=f"{fleet.id}-moved")
        await onboard(worker.client, moved, task_queue=fleet.queue)
        await eventually(lambda: fleet.listed_as(lambda listed: listed == {canary, last, joined}))
        await rollouts.control(
            worker.client, handle.id, "approve", ApproveRequest(who="ana", wave="rest")
        )
        report = await handle.result()
        assert report.status == RunStatus.COMPLETED, report.halt_reason
        assert statuses(report) == [
            ClusterStatus.SUCCEEDED,
            ClusterStatus.SKIPPED,
            ClusterStatus.SKIPPED,
            ClusterStatus.SUCCEEDED,
        ]
        assert all("left the fleet" in o.reason for o in report.outcomes[1:3])
        assert report.left == [offboarded, relabelled] and report.joined == [joined]
        await never_started(fleet, handle.id, [offboarded, relabelled, joined])
        assert await images(lab, fleet.names) == [NEW, OLD, OLD, NEW, OLD]
        await assert_unlocked(fleet, [canary, relabelled, last, joined])
