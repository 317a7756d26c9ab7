"""Records the rollout histories test_rollout_replay.py replays. Skipped unless
FLOTILLA_RECORD_HISTORIES=1:

    FLOTILLA_RECORD_HISTORIES=1 .venv/bin/pytest tests/replay/test_rollout_record.py

Scenarios: an engine run using every control (pause, resume, skip, approve) across a
continue-as-new; a Kubernetes upgrade on the lab; an add-on rollout whose canary fails on a
broken image and is rolled back automatically.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from fleet.addon_target import AddonTarget
from fleet.k8s_target import K8sTarget
from fleet.rollout_models import (
    ApproveRequest,
    ClusterStatus,
    ControlRequest,
    PlanCheckRequest,
    RolloutSpec,
    RunStatus,
    SkipRequest,
    WaveStatus,
)
from starters import rollouts
from tests.conftest import RunningWorker
from tests.workflows import test_rollout_lab as lab_tests
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    make_fleet,
    release,
    wait_progress,
)
from tests.workflows.rollout_support import start as start_scripted
from workflows.plan_check import PlanCheck

HISTORIES = Path(__file__).parent / "histories"

pytestmark = pytest.mark.skipif(
    os.environ.get("FLOTILLA_RECORD_HISTORIES") != "1", reason="re-records replay histories"
)


async def save(client: Client, workflow_id: str, name: str, run_id: str | None = None) -> None:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_record_engine_controls(engine: Engine) -> None:
    selector = await make_fleet(engine, [{"hold": "yes"}, {}, {}, {"outcome": "fail"}])
    suite = selector.split("=")[1]
    handle = await start_scripted(
        engine, selector, "canary:1,rest", approve_between=True, failure_budget="1"
    )
    await wait_progress(handle, lambda p: p.clusters[0].status == ClusterStatus.RUNNING)
    await rollouts.control(engine.client, handle.id, "pause", ControlRequest(who="rec"))
    await rollouts.control(
        engine.client, handle.id, "skip", SkipRequest(cluster=f"{suite}-02", who="rec")
    )
    await release(engine.client, handle.id, f"{suite}-00")
    await rollouts.control(engine.client, handle.id, "resume", ControlRequest(who="rec"))
    await wait_progress(handle, lambda p: p.waves[1].status == WaveStatus.AWAITING_APPROVAL)
    await rollouts.control(
        engine.client, handle.id, "approve", ApproveRequest(who="rec", wave="rest")
    )
    report = await handle.result()
    assert report.status == RunStatus.COMPLETED
    await save(engine.client, handle.id, "Rollout-controls-run1", handle.first_execution_run_id)
    await save(engine.client, handle.id, "Rollout-controls-run2")


async def test_record_lab_rollouts(worker: RunningWorker, lab: Any) -> None:
    async with lab_tests.suite_clusters(worker, lab, 1) as names:
        spec = RolloutSpec(
            id="rec-check",
            selector=f"suite={names[0].rsplit('-', 1)[0]}",
            operation=K8sTarget(version=lab_tests.NEW),
        )
        plan = await rollouts.make_plan(worker.client, spec)
        check_id = f"plan-check-{names[0]}"
        await worker.client.execute_workflow(
            PlanCheck.run, PlanCheckRequest(plan=plan), id=check_id, task_queue=worker.task_queue
        )
        await save(worker.client, check_id, "PlanCheck")
        handle = await lab_tests.start(worker, names, K8sTarget(version=lab_tests.NEW), "rest")
        assert (await handle.result()).status == RunStatus.COMPLETED
        await save(worker.client, handle.id, "Rollout-k8s")
        await save(worker.client, f"{handle.id}/{names[0]}", "K8sUpgrade")
    async with lab_tests.suite_clusters(worker, lab, 2) as names:
        apps = k8s.AppsV1Api(lab_tests.cluster_api(lab, names[0]))
        patch = {"spec": {"progressDeadlineSeconds": 2}}
        await asyncio.to_thread(apps.patch_namespaced_deployment, "coredns", "kube-system", patch)
        await lab_tests.eventually(lambda: asyncio.to_thread(lab_tests._settled, apps))
        operation = AddonTarget(name="coredns", image="registry.k8s.io/coredns/coredns:broken")
        handle = await lab_tests.start(
            worker, names, operation, "canary:1,rest", auto_rollback=True
        )
        assert (await handle.result()).status == RunStatus.ROLLED_BACK
        await save(worker.client, handle.id, "Rollout-addon-rollback")
        await save(worker.client, f"{handle.id}/{names[0]}", "AddonUpgrade-failed")
        await save(worker.client, f"{handle.id}/{names[0]}/rollback", "AddonUpgrade-undo")
