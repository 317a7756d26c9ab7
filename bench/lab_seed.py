"""How long the lab takes to build a large fleet, and what one upgrade step costs.

    .venv/bin/python bench/lab_seed.py [--clusters 500]

Prints: seeding N workload clusters + mgmt (stores, controllers, CAPI objects) in-process;
a full `Lab.start()` (plus HTTPS listeners and kubeconfig) for the same N; objects held.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from lab.runtime import Lab
from lab.simulation import Simulation
from lab.store import ObjectStore
from lab.topology import MANAGEMENT, fleet


async def seed_only(count: int) -> tuple[float, int]:
    sim = Simulation()
    start = time.perf_counter()
    mgmt = ObjectStore(MANAGEMENT)
    sim.seed_cluster(mgmt, name=MANAGEMENT, version="v1.30.6", nodes=3)
    sim.attach(MANAGEMENT, mgmt)
    sim.attach_management(mgmt)
    stores = [mgmt]
    for spec in fleet(count):
        store = ObjectStore(spec.name)
        sim.seed_cluster(store, name=spec.name, version=spec.version, nodes=3)
        sim.attach(spec.name, store)
        sim.register_capi(name=spec.name, version=spec.version, nodes=3, labels=spec.labels)
        stores.append(store)
    task = asyncio.create_task(sim.run())
    await asyncio.sleep(0)  # let the first reconcile pass run
    await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    sim.stop()
    await task
    return elapsed, sum(s.revision for s in stores)


async def full_lab(count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(directory=Path(tmp), clusters=count)
        start = time.perf_counter()
        await lab.start()
        elapsed = time.perf_counter() - start
        await lab.stop()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=500)
    count = parser.parse_args().clusters
    seconds, writes = await seed_only(count)
    print(f"seed+attach+CAPI {count} clusters + mgmt: {seconds:.2f}s ({writes} store writes)")
    started = await full_lab(count)
    print(f"Lab.start() with {count} clusters (HTTPS listeners, kubeconfig): {started:.2f}s")


if __name__ == "__main__":
    asyncio.run(main())
