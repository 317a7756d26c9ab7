"""SyncPlan: what a sync of a ref would do, changing nothing (`flotilla sync plan`, and the
first step of `sync start` and of the Git push webhook).

Resolves the ref to a commit SHA, parses that commit (a bad file refuses it, naming file
and line), places every bundle over the inventory, and previews each cluster with a
server-side apply dry-run. Git and credentials stay on the worker; the answer carries the
placement, per-cluster diffs and per-bundle placement changes (+N, -M clusters).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.cluster_access import resolve_access
from workflows.common import HEARTBEAT, INVENTORY_RETRY, KUBE_RETRY, root_failure

with workflow.unsafe.imports_passed_through():
    from activities.git import place_bundles, resolve_git_ref
    from activities.manifests import preview_clusters
    from fleet.sync_models import (
        BundleChange,
        ClusterDiff,
        GitRef,
        PlacementRequest,
        PreviewRequest,
        SyncPreview,
        SyncPreviewInput,
    )

CHUNK = 25
GIT_TIMEOUT = timedelta(minutes=5)
PREVIEW_TIMEOUT = timedelta(minutes=10)


@workflow.defn(name="SyncPlan")
class SyncPlan:
    @workflow.run
    async def run(self, req: SyncPreviewInput) -> SyncPreview:
        workflow.set_current_details(f"resolving {req.ref} in {req.repo}")
        try:
            ref = await workflow.execute_activity(
                resolve_git_ref,
                GitRef(repo=req.repo, ref=req.ref),
                start_to_close_timeout=GIT_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
            )
            placement = await workflow.execute_activity(
                place_bundles,
                PlacementRequest(
                    repo=req.repo,
                    ref=req.ref,
                    sha=ref.sha,
                    started_by=req.started_by,
                    prune_approved_by=req.prune_approved_by,
                ),
                start_to_close_timeout=GIT_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"place bundles of {ref.sha[:12]}",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        target = placement.target
        names = placement.clusters
        workflow.set_current_details(f"previewing {target.describe()} on {len(names)} clusters")
        access = await resolve_access(names)
        refs = [access[n].ref() for n in names if n in access]
        chunks = [refs[i : i + CHUNK] for i in range(0, len(refs), CHUNK)]
        try:
            answers = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        preview_clusters,
                        PreviewRequest(clusters=chunk, target=target),
                        start_to_close_timeout=PREVIEW_TIMEOUT,
                        heartbeat_timeout=HEARTBEAT,
                        retry_policy=KUBE_RETRY,
                        summary=f"preview {chunk[0].name}..{chunk[-1].name}",
                    )
                    for chunk in chunks
                )
            )
        except ActivityError as err:
            failure = root_failure(err)
            raise ApplicationError(failure.message, type=failure.type, non_retryable=True) from None
        diffs = sorted((d for a in answers for d in a.diffs), key=lambda d: d.cluster)
        preview = SyncPreview(placement=placement, diffs=diffs, changes=bundle_changes(diffs))
        workflow.set_current_details(_details(preview))
        return preview


def bundle_changes(diffs: list[ClusterDiff]) -> list[BundleChange]:
    """Per bundle, the clusters gaining and losing it."""
    changes: dict[str, BundleChange] = {}
    for d in diffs:
        for b in d.gained:
            changes.setdefault(b, BundleChange(bundle=b)).added.append(d.cluster)
        for b in d.lost:
            changes.setdefault(b, BundleChange(bundle=b)).removed.append(d.cluster)
    return [changes[b] for b in sorted(changes)]


def _details(p: SyncPreview) -> str:
    creates = sum(d.count("create") for d in p.diffs)
    changes = sum(d.count("change") for d in p.diffs)
    deletes = sum(d.count("delete") for d in p.diffs)
    moved = "; ".join(f"{c.bundle} +{len(c.added)} -{len(c.removed)}" for c in p.changes)
    problems = sum(1 for d in p.diffs if d.problem)
    return (
        f"{p.placement.target.describe()}: {len(p.diffs)} clusters, +{creates} ~{changes} "
        f"-{deletes} objects; placement {moved or 'unchanged'}; {problems} problems"
    )
