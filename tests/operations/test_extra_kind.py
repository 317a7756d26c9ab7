"""A kind added through the registry alone (tests/operations/annotate_kind.py) runs like
the built-in ones on the dev server and the lab: its generated CLI plans it, the engine
checks, starts, pauses and resumes it across waves, and reports it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import typer
from kubernetes import client as k8s
from typer.testing import CliRunner

from fleet.rollout_models import (
    ClusterStatus,
    ControlRequest,
    Outcome,
    RolloutOptions,
    RolloutSpec,
)
from starters import cli_rollout, rollouts
from starters.errors import CliError
from tests.conftest import RunningWorker
from tests.operations.annotate_kind import ANNOTATE
from tests.operations.annotate_target import PREFIX, AnnotateTarget
from tests.workflows.rollout_support import eventually
from tests.workflows.test_rollout_lab import cluster_api, suite_clusters
from worker import build_worker
from workflows.registry import OPERATIONS


@pytest.fixture(scope="module")
async def annotate_worker(worker: RunningWorker) -> AsyncIterator[RunningWorker]:
    """The real worker configuration, built after the kind joined the registry."""
    if ANNOTATE not in OPERATIONS:
        OPERATIONS.add(ANNOTATE)
    queue = f"annotate-{uuid.uuid4().hex[:6]}"
    async with build_worker(worker.client, task_queue=queue):
        yield RunningWorker(client=worker.client, task_queue=queue)


def annotation(lab: Any, name: str, key: str) -> str:
    namespace: Any = k8s.CoreV1Api(cluster_api(lab, name)).read_namespace("kube-system")
    return str((namespace.metadata.annotations or {}).get(PREFIX + key, ""))


def cli_plan(address: str, selector: str) -> str:
    """`annotate plan` through the flags generated from AnnotateTarget (no CLI code)."""
    app = typer.Typer()
    group = typer.Typer()
    group.command("plan")(cli_rollout.plan_command(ANNOTATE))
    group.command("start")(cli_rollout.start_command(ANNOTATE))
    app.add_typer(group, name="annotate")
    env = {**os.environ, "TEMPORAL_ADDRESS": address}
    args = ["annotate", "plan", "--key", "owner", "--value", "x", "-l", selector, "--no-check"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(app, ["annotate", "start", "--key", "", "--value", "x"], env=env)
    # starters.cli.main prints a CliError as one line with its exit code.
    assert isinstance(bad.exception, CliError) and bad.exception.code == 2, bad.output
    assert bad.exception.message.startswith("--key: ")
    return result.output


async def test_a_registered_kind_runs_through_plan_waves_controls_and_report(
    annotate_worker: RunningWorker, worker: RunningWorker, lab: Any, temporal_address: str
) -> None:
    async with suite_clusters(worker, lab, 3) as names:
        selector = f"suite={names[0].rsplit('-', 1)[0]}"
        printed = await asyncio.to_thread(cli_plan, temporal_address, selector)
        assert all(name in printed for name in names)

        target = AnnotateTarget(key="owner", value=f"team-{uuid.uuid4().hex[:4]}")
        spec = RolloutSpec(
            id=uuid.uuid4().hex[:8],
            selector=selector,
            waves=["canary:1", "rest"],
            operation=target,
            options=RolloutOptions(max_concurrent=1, soak="2s"),
        )
        client, queue = annotate_worker.client, annotate_worker.task_queue
        plan = await rollouts.make_plan(client, spec)
        await rollouts.check_plan(client, plan, task_queue=queue)
        lab.admin.fault(names[0], "slow", latency_ms=300)  # the canary stays observable
        handle = await rollouts.start_rollout(client, plan, task_queue=queue)

        async def canary_running() -> bool:
            p = await rollouts.progress(client, handle.id)
            return p.clusters[0].status == ClusterStatus.RUNNING

        await eventually(canary_running)
        await rollouts.control(client, handle.id, "pause", ControlRequest(who="t"))
        lab.admin.clear(names[0])

        async def canary_done_rest_waiting() -> bool:
            p = await rollouts.progress(client, handle.id)
            statuses = [c.status for c in p.clusters]
            return statuses == [
                ClusterStatus.SUCCEEDED,
                ClusterStatus.PENDING,
                ClusterStatus.PENDING,
            ]

        await eventually(canary_done_rest_waiting)
        await asyncio.sleep(3)  # past the soak: still paused, nothing more started
        assert await canary_done_rest_waiting()
        assert await asyncio.to_thread(annotation, lab, names[1], "owner") == ""
        await rollouts.control(client, handle.id, "resume", ControlRequest(who="t"))

        report = await handle.result()
        assert report.outcome == Outcome.SUCCEEDED, report
        assert report.target == f"annotation {PREFIX}owner={target.value}"
        assert [o.status for o in report.outcomes] == [ClusterStatus.SUCCEEDED] * 3
        assert [c.action for c in report.controls] == ["pause", "resume"]
        for name in names:
            assert await asyncio.to_thread(annotation, lab, name, "owner") == target.value
