"""Helpers for the DR tests: policies for lab-seeded applications and fake ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from temporalio.client import Client, WorkflowFailureError

from fleet.dr import (
    DrPolicy,
    DrProgress,
    DrRequest,
    DrResult,
    OpKind,
    WatchSettings,
    watch_id,
)
from starters.cli_dr import lab_policy
from tests.conftest import RunningWorker
from tests.workflows.core_support import unique

if TYPE_CHECKING:
    from lab.testing import LabProcess


# Watches the tests started, terminated after each test (tests/dr/conftest.py).
WATCHES: list[tuple[Client, str]] = []


@dataclass
class LabApp:
    """A DR application seeded in the lab and registered in Flotilla."""

    name: str
    clusters: list[str]
    policy: DrPolicy


async def seed_app(
    lab: LabProcess,
    worker: RunningWorker,
    clusters: list[str],
    *,
    ttl: int = 1,
    automatic: bool = False,
    watch: WatchSettings | None = None,
    start_watch: bool = False,
) -> LabApp:
    """Seeds an application on `clusters` (first = primary) and registers its policy."""
    from activities.dr_records import register_policy
    from starters.cli_dr import start_watch as start

    name = unique("app")
    lab.admin.seed_dr_app(name, clusters, ttl=ttl)
    policy = lab_policy(
        name,
        clusters,
        kubeconfig=str(lab.kubeconfig),
        management_context=lab.info["management_context"],
        ttl=ttl,
        automatic=automatic,
        watch=watch,
    )
    await register_policy(worker.client, policy, task_queue=worker.task_queue)
    if start_watch:
        await start(worker.client, name, task_queue=worker.task_queue)
        WATCHES.append((worker.client, watch_id(name)))
    return LabApp(name=name, clusters=clusters, policy=policy)


async def run(worker: RunningWorker, kind: OpKind, request: DrRequest) -> tuple[str, DrResult]:
    """Starts a DR run and waits for it; returns its id and result."""
    from activities.dr_observe import start_run

    workflow_id = f"{kind}:{request.app}:{unique('r')}"
    await start_run(
        worker.client, kind, request, workflow_id=workflow_id, task_queue=worker.task_queue
    )
    handle = worker.client.get_workflow_handle(workflow_id, result_type=DrResult)
    try:
        return workflow_id, await handle.result()
    except WorkflowFailureError:  # a failed run: its progress says why
        progress = await handle.query("progress", result_type=DrProgress)
        return workflow_id, DrResult(progress=progress)


def writable(lab: LabProcess, app: str) -> list[str]:
    """Members whose database says it takes writes now."""
    return [m["member"] for m in lab.admin.dr_app(app)["members"] if m["writable"]]


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def wait_for(check: Callable[[], bool], what: str, *, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def fenced(lab: LabProcess, app: str, member: str) -> bool:
    found = next(m for m in lab.admin.dr_app(app)["members"] if m["member"] == member)
    return bool(found["fenced"]) and not found["writable"]
