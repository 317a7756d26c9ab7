"""In-process fixtures for the simulation tests: stores driven by a running Simulation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from lab.controllers.common import condition
from lab.simulation import Simulation
from lab.store import Obj, ObjectStore
from lab.topology import MANAGEMENT

# Generous bound for conditions the simulation reaches in well under a second.
WAIT = 20.0


def cond(obj: Obj, type_: str) -> Obj:
    """The object's condition of `type_`, which must exist."""
    found = condition(obj, type_)
    assert found is not None, f"no {type_} condition in {obj.get('status')}"
    return found


@dataclass
class Fleet:
    sim: Simulation
    mgmt: ObjectStore
    stores: dict[str, ObjectStore] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def watch(self, store: ObjectStore) -> None:
        """Makes `eventually` re-check its predicate after every write to `store`."""
        store.add_listener(lambda _event: self.changed.set())

    async def eventually(self, predicate: Callable[[], object]) -> None:
        """Waits until `predicate()` holds, re-checking after each store change; fails
        after WAIT seconds so a broken controller fails the test instead of hanging it."""
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"condition never became true: {predicate}") from None


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
    fleet.watch(mgmt)
    for name in names:
        store = ObjectStore(name)
        sim.seed_cluster(store, name=name, version=version, nodes=nodes)
        sim.attach(name, store)
        sim.register_capi(name=name, version=version, nodes=nodes, labels={"env": "dev"})
        fleet.stores[name] = store
        fleet.watch(store)
    task = asyncio.create_task(sim.run())
    try:
        yield fleet
    finally:
        sim.stop()
        await task
