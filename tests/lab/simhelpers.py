"""In-process fixtures for the simulation tests: stores driven by a running Simulation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from lab.simulation import Simulation
from lab.store import ObjectStore
from lab.topology import MANAGEMENT

# Generous bound for conditions the simulation reaches in well under a second.
WAIT = 20.0


async def eventually(predicate: Callable[[], object], *, timeout: float = WAIT) -> None:
    """Waits until `predicate()` is truthy (re-checking as the loop runs); fails after
    `timeout` so a broken controller fails the test instead of hanging it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition never became true: {predicate}")
        await asyncio.sleep(0.01)


@dataclass
class Fleet:
    sim: Simulation
    mgmt: ObjectStore
    stores: dict[str, ObjectStore] = field(default_factory=dict)


@asynccontextmanager
async def running_fleet(
    *names: str, version: str = "v1.30.6", nodes: int = 3, **options: float
) -> AsyncIterator[Fleet]:
    """A management cluster plus workload clusters `names`, seeded and attached, with the
    simulation running on the test's loop."""
    sim = Simulation(rollout_delay=0.05, upgrade_seconds=0.1, **options)
    mgmt = ObjectStore(MANAGEMENT)
    sim.seed_cluster(mgmt, name=MANAGEMENT, version=version, nodes=1)
    sim.attach(MANAGEMENT, mgmt)
    sim.attach_management(mgmt)
    fleet = Fleet(sim, mgmt)
    for name in names:
        store = ObjectStore(name)
        sim.seed_cluster(store, name=name, version=version, nodes=nodes)
        sim.attach(name, store)
        sim.register_capi(name=name, version=version, nodes=nodes, labels={"env": "dev"})
        fleet.stores[name] = store
    task = asyncio.create_task(sim.run())
    try:
        yield fleet
    finally:
        sim.stop()
        await task
