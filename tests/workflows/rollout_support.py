"""Support for rollout engine tests: a worker running the engine with the scripted child
(scripted_child.py) and inventory records without clusters behind them, so the engine's
logic runs on a real dev server quickly. The lab-backed tests (test_rollout_lab.py) run
the real K8sUpgrade and AddonUpgrade children.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.events import deliver_event, relay_event
from activities.inventory import list_cluster_names, register, release_lock
from fleet.models import CredentialRef, LockRelease, Phase, RecordsQuery, RegisterRequest
from fleet.rollout_models import (
    ClusterStatus,
    RolloutOptions,
    RolloutProgress,
    RolloutReport,
    RolloutSpec,
)
from starters import rollouts
from starters.inventory import list_clusters
from tests.conftest import RunningWorker
from tests.workflows.core_support import eventually as core_eventually
from tests.workflows.scripted_child import ScriptedCluster
from tests.workflows.scripted_target import ScriptedTarget
from workflows.event_relay import EventRelay
from workflows.registry import OPERATIONS, Operation
from workflows.rollout import Rollout

SCRIPTED = Operation(
    kind="scripted",
    target=ScriptedTarget,
    child=ScriptedCluster,
    preflight=None,
    command="scripted",
    help="Engine tests: a per-cluster child scripted by cluster labels.",
)

T = TypeVar("T")


# Each scripted cluster's script by name (make_fleet), carried to children by the target.
SCRIPTS: dict[str, dict[str, str]] = {}


def register_scripted() -> None:
    """Adds the `scripted` kind to the registry (once per process)."""
    if "scripted" not in {o.kind for o in OPERATIONS}:
        OPERATIONS.add(SCRIPTED)


@dataclass
class Engine:
    client: Client
    task_queue: str  # the engine's (Rollout and ScriptedCluster)
    inventory_queue: str  # the real worker's, where cluster entities run


@pytest.fixture(scope="session", name="engine")
async def engine_fixture(temporal_worker: RunningWorker) -> AsyncIterator[Engine]:
    """A worker running the Rollout engine with scripted children on its own queue."""
    register_scripted()
    queue = f"rollout-engine-{uuid.uuid4().hex[:6]}"
    async with Worker(
        temporal_worker.client,
        task_queue=queue,
        workflows=[Rollout, ScriptedCluster, EventRelay],
        activities=[list_cluster_names, relay_event, deliver_event],
    ):
        yield Engine(temporal_worker.client, queue, temporal_worker.task_queue)


async def make_fleet(engine: Engine, scripts: list[dict[str, str]], *, env: str = "prod") -> str:
    """Registers one record per script (labels; names `<suite>-<i>`, in plan order) and
    returns a selector choosing exactly them."""
    suite = f"s{uuid.uuid4().hex[:6]}"
    client = engine.client

    async def one(i: int, labels: dict[str, str]) -> None:
        name = f"{suite}-{i:02d}"
        await add_record(engine, name, {"suite": suite, "env": env, **labels})

    await asyncio.gather(*(one(i, labels) for i, labels in enumerate(scripts)))
    await eventually(
        lambda: _count(client, f"suite={suite}", len(scripts)),
    )
    SCRIPTS.update({f"{suite}-{i:02d}": labels for i, labels in enumerate(scripts)})
    return f"suite={suite}"


async def add_record(engine: Engine, name: str, labels: dict[str, str]) -> None:
    client = engine.client
    holder = f"setup:{name}"
    request = RegisterRequest(
        name=name, credential=CredentialRef(context=f"ctx-{name}"), labels=labels, holder=holder
    )
    await register(client, request, task_queue=engine.inventory_queue)
    await release_lock(client, LockRelease(cluster=name, holder=holder, phase=Phase.ACTIVE))


async def _count(client: Client, selector: str, expected: int) -> bool:
    records = await list_clusters(client, RecordsQuery(selector=selector))
    return len(records) == expected and all(r.phase == Phase.ACTIVE for r in records)


def spec(selector: str, waves: str, **options: object) -> RolloutSpec:
    return RolloutSpec(
        id=uuid.uuid4().hex[:8],
        selector=selector,
        waves=[waves],
        operation=ScriptedTarget(
            scripts={n: s for n, s in SCRIPTS.items() if n.startswith(selector[6:] + "-")}
        ),
        options=RolloutOptions(health_gates=False, **options),
    )


async def start(
    engine: Engine, selector: str, waves: str, **options: object
) -> WorkflowHandle[Rollout, RolloutReport]:
    plan = await rollouts.make_plan(engine.client, spec(selector, waves, **options))
    return await rollouts.start_rollout(engine.client, plan, task_queue=engine.task_queue)


async def progress(handle: WorkflowHandle) -> RolloutProgress:
    return await handle.query("progress", result_type=RolloutProgress)


async def wait_progress(
    handle: WorkflowHandle, predicate: Callable[[RolloutProgress], bool]
) -> RolloutProgress:
    async def probe() -> RolloutProgress | None:
        p = await rollouts.progress(handle._client, handle.id)
        return p if predicate(p) else None

    return await eventually(probe)


def status_of(p: RolloutProgress, suffix: str) -> ClusterStatus:
    return next(c.status for c in p.clusters if c.name.endswith(suffix))


async def release(client: Client, rollout_id: str, cluster: str) -> None:
    await client.get_workflow_handle(f"{rollout_id}/{cluster}").signal("release")


async def eventually(probe: Callable[[], Awaitable[T | None]], *, attempts: int = 300) -> T:
    """`core_support.eventually` with the longer patience rollouts need."""
    return await core_eventually(probe, attempts=attempts)
