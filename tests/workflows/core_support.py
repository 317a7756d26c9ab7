"""Helpers for the inventory tests: make entities and lock holders without the lab."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import Client, WorkflowHandle

from activities.inventory import register, release_lock
from fleet.models import CredentialRef, LockRelease, Phase, RegisterRequest

T = TypeVar("T")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def new_cluster(
    client: Client,
    task_queue: str,
    *,
    labels: dict[str, str] | None = None,
    lock_check_seconds: int = 300,
) -> str:
    """Registers a fresh cluster record (no real cluster behind it) and makes it active."""
    name = unique()
    holder = f"setup:{name}"
    await register(
        client,
        RegisterRequest(
            name=name,
            credential=CredentialRef(context=f"ctx-{name}"),
            labels=labels or {},
            holder=holder,
        ),
        task_queue=task_queue,
        lock_check_seconds=lock_check_seconds,
    )
    await release_lock(client, LockRelease(cluster=name, holder=holder, phase=Phase.ACTIVE))
    return name


async def start_holder(client: Client) -> WorkflowHandle:
    """A running workflow to act as a lock holder: nothing polls its task queue, so it
    stays Running until terminated."""
    return await client.start_workflow(
        "IdleOperation", id=unique("op"), task_queue=unique("nobody")
    )


async def eventually(probe: Callable[[], Awaitable[T | None]], *, attempts: int = 100) -> T:
    """Polls `probe` until it returns something truthy (visibility lags writes)."""
    for _ in range(attempts):
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition never held")


def kube_get(kubeconfig: str, context: str, path: str) -> dict | None:
    """GET an API path on a lab cluster as the admin; None on 404."""
    from kubernetes.client.exceptions import ApiException

    from activities.kube import api_client, request
    from fleet.models import CredentialRef

    try:
        return request(
            api_client(CredentialRef(kubeconfig=kubeconfig, context=context)), "GET", path
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


BASELINE_PATHS = [
    "/api/v1/namespaces/flotilla-system",
    "/api/v1/namespaces/flotilla-system/serviceaccounts/flotilla",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/flotilla",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/flotilla",
    "/api/v1/namespaces/flotilla-system/configmaps/flotilla-identity",
]


async def baseline_versions(kubeconfig: str, context: str) -> dict[str, tuple[str, str] | None]:
    """(uid, resourceVersion) of each baseline object, None where absent."""
    versions: dict[str, tuple[str, str] | None] = {}
    for path in BASELINE_PATHS:
        obj = await asyncio.to_thread(kube_get, kubeconfig, context, path)
        versions[path] = (
            (obj["metadata"]["uid"], obj["metadata"]["resourceVersion"]) if obj else None
        )
    return versions
