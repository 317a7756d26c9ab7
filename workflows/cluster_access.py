"""Reading how to reach clusters from the inventory, shared by the rollout engine and the
operations that walk the fleet outside it (sync plans, certificate scans). It imports no
registry, so the registry may import those operations."""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows.common import INVENTORY_RETRY, INVENTORY_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.inventory import resolve_clusters
    from fleet.rollout_models import ClusterAccess, ClusterNames

CHUNK = 50  # names per inventory read


async def resolve_access(names: list[str]) -> dict[str, ClusterAccess]:
    """How to reach each named cluster, read from the inventory in chunks (the plan carries
    names only); a name without an active record is absent from the answer."""
    chunks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
    answers = await asyncio.gather(
        *(
            workflow.execute_activity(
                resolve_clusters,
                ClusterNames(names=chunk),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"inventory records {chunk[0]}..{chunk[-1]}",
            )
            for chunk in chunks
        )
    )
    return {c.name: c for answer in answers for c in answer.clusters}
