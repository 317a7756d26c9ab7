"""Client-side inventory helpers for the CLI, webhooks and tests: start onboarding and
offboarding runs, read records, and build onboarding requests from a kubeconfig.

Starting is idempotent: a run already in progress for the same cluster is joined
(`USE_EXISTING`), a finished one is started again (re-onboarding reconciles).
"""

from __future__ import annotations

import asyncio

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from activities.inventory import fetch_records, get_record
from fleet import kubeconfig, search
from fleet.config import Settings
from fleet.ids import cluster_name_error, labels_error, offboard_id, onboard_id
from fleet.models import (
    ClusterRecord,
    CredentialRef,
    ManagementRef,
    OffboardRequest,
    OffboardResult,
    OnboardRequest,
    OnboardResult,
    RecordsQuery,
)
from starters.schedules import ensure_health_schedule

__all__ = [
    "OnboardRequest",
    "ensure_health_schedule",
    "get_cluster",
    "list_clusters",
    "offboard",
    "onboard",
    "onboard_many",
    "requests_from_kubeconfig",
]


def _queue(task_queue: str | None) -> str:
    return task_queue or Settings.from_env().task_queue


async def onboard(
    client: Client, req: OnboardRequest, *, wait: bool = True, task_queue: str | None = None
) -> OnboardResult | WorkflowHandle:
    """Starts (or joins) `onboard:<name>`; returns its result, or its handle if not `wait`.
    Raises ValueError for a bad name or labels before contacting Temporal."""
    if problem := cluster_name_error(req.name) or labels_error(req.labels):
        raise ValueError(problem)
    handle = await client.start_workflow(
        "Onboard",
        req,
        id=onboard_id(req.name),
        task_queue=_queue(task_queue),
        result_type=OnboardResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Onboard cluster {req.name}",
        static_details=f"context {req.credential.context}, labels "
        + (", ".join(f"{k}={v}" for k, v in sorted(req.labels.items())) or "none"),
        search_attributes=_operation_attributes("onboard", req.name),
    )
    return await handle.result() if wait else handle


async def onboard_many(
    client: Client, requests: list[OnboardRequest], *, task_queue: str | None = None
) -> list[OnboardResult | BaseException]:
    """Onboards every request in parallel (one Onboard run each); failures are returned in
    place of results, so one dead cluster does not hide the others."""
    handles = await asyncio.gather(
        *(onboard(client, r, wait=False, task_queue=task_queue) for r in requests),
        return_exceptions=True,
    )

    async def result(started: object) -> OnboardResult:
        if isinstance(started, BaseException):
            raise started
        assert isinstance(started, WorkflowHandle)
        return await started.result()

    return await asyncio.gather(*(result(h) for h in handles), return_exceptions=True)


async def offboard(
    client: Client,
    name: str,
    *,
    wait: bool = True,
    force: bool = False,
    task_queue: str | None = None,
) -> OffboardResult | WorkflowHandle:
    handle = await client.start_workflow(
        "Offboard",
        OffboardRequest(name=name, force=force),
        id=offboard_id(name),
        task_queue=_queue(task_queue),
        result_type=OffboardResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Offboard cluster {name}" + (" (forced)" if force else ""),
        search_attributes=_operation_attributes("offboard", name),
    )
    return await handle.result() if wait else handle


async def list_clusters(client: Client, query: RecordsQuery) -> list[ClusterRecord]:
    return await fetch_records(client, query)


async def get_cluster(client: Client, name: str) -> ClusterRecord | None:
    return await get_record(client, name)


def requests_from_kubeconfig(
    path: str,
    *,
    contexts: list[str] | None = None,
    strip_prefix: str = "",
    labels: dict[str, dict[str, str]] | None = None,
    management: ManagementRef | None = None,
) -> list[OnboardRequest]:
    """One OnboardRequest per context of a kubeconfig (or the given `contexts`). The
    cluster name is the context name without `strip_prefix` (`lab-` for the lab);
    `labels` maps cluster names to labels. With `management`, each cluster's Cluster API
    objects are looked up there under the cluster's name. Reads context names only; `path`
    may be a `:`-separated list, merged as kubectl does."""
    try:
        available = kubeconfig.contexts(kubeconfig.load(path))
    except kubeconfig.KubeconfigError as exc:
        raise ValueError(str(exc)) from None
    chosen = contexts or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ValueError(f"no context {', '.join(unknown)} in {path}")
    requests = []
    for context in chosen:
        name = context.removeprefix(strip_prefix)
        requests.append(
            OnboardRequest(
                name=name,
                credential=CredentialRef(kubeconfig=path, context=context),
                labels=(labels or {}).get(name, {}),
                management=management.model_copy(update={"cluster": name}) if management else None,
            )
        )
    return requests


def _operation_attributes(kind: str, cluster: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [SearchAttributePair(search.KIND, kind), SearchAttributePair(search.CLUSTERS, [cluster])]
    )
