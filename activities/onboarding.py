"""Onboarding's write step as one activity: claim the identity and register (taking the
cluster's lock), install the baseline, release the lock with phase `active`.

One activity instead of three saves the Onboard run two activity tasks and two workflow
tasks, most of what the Temporal server did per onboarding. Every step is idempotent, so
a retry (a failed baseline write, a killed worker) runs the whole step again: the
registration is granted again to the same holder, the baseline finds what it made, the
release is a no-op once done. A failure leaves the lock held by the onboarding run, which
releases it (restoring the phase from before) when it gives up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity

from activities.baseline import install_baseline
from activities.inventory import claim_identity, register, release_lock
from fleet.models import (
    BaselineSpec,
    ClusterRef,
    IdentityClaim,
    LockRelease,
    Onboarded,
    Phase,
    RegisterRequest,
)

T = TypeVar("T")


async def _beating(call: Awaitable[T], what: str) -> T:
    """Awaits `call`, heartbeating every 5 s meanwhile (an entity update on a busy server
    can take longer than the heartbeat timeout)."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=5)
            if done:
                return task.result()
            activity.heartbeat(what)
    finally:
        task.cancel()


@activity.defn
async def register_and_install(req: RegisterRequest) -> Onboarded:
    """Identity claim, registration, baseline and release for `req.holder`. Refusals
    (`DuplicateCluster`, `ClusterLocked`, `IdentityChanged`, ...) are non-retryable."""
    client, queue = activity.client(), activity.info().task_queue
    log = {"cluster": req.name}
    if req.uid:
        claim = IdentityClaim(uid=req.uid, cluster=req.name)
        await _beating(claim_identity(client, claim, task_queue=queue), "claiming the identity")
    registration = await _beating(register(client, req, task_queue=queue), "registering")
    activity.logger.info("registered, previous phase %s", registration.previous_phase, extra=log)
    loop = asyncio.get_running_loop()

    def progress(done: str) -> None:  # from the baseline's thread
        loop.call_soon_threadsafe(activity.heartbeat, done)

    cluster = ClusterRef(name=req.name, credential=req.credential)
    spec = BaselineSpec(cluster=cluster, labels=req.labels)
    baseline = await asyncio.to_thread(install_baseline, spec, progress)
    release = LockRelease(cluster=req.name, holder=req.holder, phase=Phase.ACTIVE)
    record = await _beating(release_lock(client, release), "releasing the lock")
    assert record is not None  # registered above, entities are never deleted
    return Onboarded(record=record, baseline=baseline, previous_phase=registration.previous_phase)
