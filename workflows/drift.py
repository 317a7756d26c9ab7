"""DriftSweep: check one bundle on every cluster of the fleet for drift from Git.

Started by the bundle's Temporal Schedule `flotilla-drift-<bundle>` (starters/cli_sync.py
creates it when a sync of the repository starts). Each cluster is one `check_drift`
activity, `concurrency` at a time; clusters without the bundle answer at once. Drift that
enforce mode would correct is re-applied by a second call, only when no operation holds
the cluster's lock (otherwise reported as deferred to the next sweep). The result
lists every drifted field (uncapped; `flotilla drift list` reads the newest finished
sweep's, updated with what a running sweep found so far through its `progress` query) and
the UI's details say how many fields drifted, were corrected, or are fought over.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.common import (
    HEARTBEAT,
    INVENTORY_RETRY,
    INVENTORY_TIMEOUT,
    KUBE_RETRY,
    operation_attributes,
    root_failure,
)

with workflow.unsafe.imports_passed_through():
    from activities.drift import check_drift
    from activities.inventory import get_cluster_records, list_cluster_names, resolve_clusters
    from fleet.models import ClusterRef, RecordsQuery
    from fleet.rollout_models import ClusterNames
    from fleet.sync_models import DriftCheck, DriftCheckResult, DriftSweepInput, DriftSweepResult

CHECK_TIMEOUT = timedelta(minutes=5)
CHUNK = 50


@workflow.defn(name="DriftSweep")
class DriftSweep:
    def __init__(self) -> None:
        self._result = DriftSweepResult(bundle="")

    @workflow.query
    def progress(self) -> DriftSweepResult:
        return self._result

    @workflow.run
    async def run(self, req: DriftSweepInput) -> DriftSweepResult:
        self._result = DriftSweepResult(bundle=req.bundle)
        try:
            if req.clusters is not None:
                names = ClusterNames(names=req.clusters)
            else:
                names = await workflow.execute_activity(
                    list_cluster_names,
                    RecordsQuery(selector=req.selector),
                    start_to_close_timeout=INVENTORY_TIMEOUT,
                    retry_policy=INVENTORY_RETRY,
                    summary="list clusters",
                )
            chunks = [names.names[i : i + CHUNK] for i in range(0, len(names.names), CHUNK)]
            access = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        resolve_clusters,
                        ClusterNames(names=chunk),
                        start_to_close_timeout=INVENTORY_TIMEOUT,
                        retry_policy=INVENTORY_RETRY,
                    )
                    for chunk in chunks
                )
            )
        except ActivityError as err:
            raise root_failure(err) from None
        refs = [c.ref() for a in access for c in a.clusters]
        self._result.clusters = len(refs)
        operation_attributes("drift", [r.name for r in refs])
        self._details()
        gate = asyncio.Semaphore(req.concurrency)

        async def one(ref: ClusterRef) -> None:
            async with gate:
                await self._check(req, ref)

        await asyncio.gather(*(one(r) for r in refs))
        self._result.drifts.sort(key=lambda d: (d.cluster, d.key, d.path))
        self._result.conflicts.sort()
        self._result.checked_clusters.sort()
        self._details()
        return self._result

    async def _check(self, req: DriftSweepInput, ref: ClusterRef) -> None:
        check = DriftCheck(cluster=ref, bundle=req.bundle, repo=req.repo)
        try:
            found = await self._check_drift(check, "drift")
            if found.to_correct:
                # Enforcement never races an operation holding the cluster's lock (a sync
                # applying another commit, an add-on rollout): it waits for the next sweep.
                holder = await self._lock_holder(ref.name)
                if holder:
                    self._result.deferred[ref.name] = f"locked by {holder}"
                else:
                    check.enforce = True
                    found = await self._check_drift(check, "correct drift")
        except ActivityError as err:
            self._result.failed[ref.name] = root_failure(err).message
        else:
            r = self._result
            r.objects += found.objects
            r.drifts += found.drifts
            r.corrected += found.corrected
            r.conflicts += [f"{ref.name}: {c}" for c in found.conflicts]
        self._result.checked += 1
        self._result.checked_clusters.append(ref.name)
        self._details()

    async def _check_drift(self, check: DriftCheck, what: str) -> DriftCheckResult:
        found: DriftCheckResult = await workflow.execute_activity(
            check_drift,
            check,
            start_to_close_timeout=CHECK_TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=KUBE_RETRY,
            summary=f"{what} of {check.bundle} on {check.cluster.name}",
        )
        return found

    async def _lock_holder(self, cluster: str) -> str:
        """Who holds the cluster's operation lock now ("" when free), read just before
        enforcing. A lock taken after this read is caught by that operation's own check."""
        records = await workflow.execute_activity(
            get_cluster_records,
            RecordsQuery(names=[cluster]),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
            summary=f"lock of {cluster}",
        )
        lock = records.records[0].lock if records.records else None
        return lock.holder if lock else ""

    def _details(self) -> None:
        r = self._result
        clusters = len({d.cluster for d in r.drifts})
        head = (
            f"bundle {r.bundle}: checked {r.checked}/{r.clusters} clusters, {r.objects} objects;"
            f" {len(r.drifts)} drifted fields on {clusters} clusters, {r.corrected} corrected,"
            f" {len(r.conflicts)} conflicts, {len(r.deferred)} deferred (locked),"
            f" {len(r.failed)} unreadable"
        )
        lines = [f"conflict: {c}" for c in r.conflicts[:20]]
        lines += [f"not corrected: {n}: {why}" for n, why in sorted(r.deferred.items())[:20]]
        lines += [f"{d.cluster} {d.key} {d.path}: {d.live} (by {d.manager})" for d in r.drifts[:20]]
        workflow.set_current_details("\n".join([head, *lines]))
