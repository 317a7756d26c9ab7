"""Add-on upgrades: read, set and wait for a Deployment's or DaemonSet's container image.

The workflow reads the current image before setting the new one and keeps it in its
history, so the undo target survives a retry of the set (which, seeing the new image
already there, writes nothing). Waiting follows the `kubectl rollout status` rules:
observedGeneration caught up, every replica updated, ready and available. A Deployment
whose Progressing condition reports ProgressDeadlineExceeded has failed (non-retryable).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube import REQUEST_TIMEOUT, api_client, api_error_message, write_error
from activities.polling import Look, wait_until
from fleet.addon_target import AddonTarget
from fleet.rollout_models import (
    PreflightRequest,
    PreflightResult,
    SetImage,
    WaitRollout,
    WorkloadRef,
    WorkloadState,
)

STRATEGIC_MERGE = "application/strategic-merge-patch+json"


def _read(ref: WorkloadRef) -> dict[str, Any]:
    api = api_client(ref.cluster.credential)
    apps = client.AppsV1Api(api)
    read = (
        apps.read_namespaced_deployment
        if ref.workload == "deployment"
        else apps.read_namespaced_daemon_set
    )
    try:
        obj = read(ref.name, ref.namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            raise ApplicationError(
                f"{ref.cluster.name}: unknown add-on: {ref.workload} {ref.namespace}/{ref.name} "
                "not found",
                type="UnknownAddon",
                non_retryable=True,
            ) from None
        raise ApplicationError(api_error_message(ref.cluster.name, exc)) from None
    except Exception as exc:  # not reachable (urllib3, TLS): retryable, message secret-free
        raise ApplicationError(
            api_error_message(ref.cluster.name, exc), type="Unreachable"
        ) from None
    return api.sanitize_for_serialization(obj)


def _container(ref: WorkloadRef, obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    if not ref.container:
        return containers[0]
    for container in containers:
        if container["name"] == ref.container:
            return container
    names = ", ".join(c["name"] for c in containers)
    raise ApplicationError(
        f"{ref.cluster.name}: {ref.workload} {ref.namespace}/{ref.name} has no container "
        f"{ref.container!r} (it has: {names})",
        type="UnknownAddon",
        non_retryable=True,
    )


def _state(ref: WorkloadRef, obj: dict[str, Any]) -> WorkloadState:
    container = _container(ref, obj)
    status = obj.get("status", {})
    generation = obj["metadata"].get("generation", 0)
    if ref.workload == "deployment":
        desired = obj["spec"].get("replicas", 1)
        counts = ("updatedReplicas", "readyReplicas", "availableReplicas")
    else:
        desired = status.get("desiredNumberScheduled", 0)
        counts = ("updatedNumberScheduled", "numberReady", "numberAvailable")
    failure = ""
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failure = f"ProgressDeadlineExceeded: {cond.get('message', '')}".strip()
    return WorkloadState(
        container=container["name"],
        image=container["image"],
        generation=generation,
        observed_generation=status.get("observedGeneration", 0),
        desired=desired,
        updated=status.get(counts[0], 0),
        ready=status.get(counts[1], 0),
        available=status.get(counts[2], 0),
        failure=failure,
    )


@activity.defn(no_thread_cancel_exception=True)
def read_workload(ref: WorkloadRef) -> WorkloadState:
    return _state(ref, _read(ref))


@activity.defn(no_thread_cancel_exception=True)
def set_workload_image(request: SetImage) -> WorkloadState:
    """Sets the container's image (strategic merge on the container name); no write when
    it already is the target. Returns the state after the write (its generation is the one
    to wait for)."""
    ref = request.workload
    state = _state(ref, _read(ref))
    if state.image == request.image:
        return state
    body = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": state.container, "image": request.image}]}
            }
        }
    }
    apps = client.AppsV1Api(api_client(ref.cluster.credential))
    patch = (
        apps.patch_namespaced_deployment
        if ref.workload == "deployment"
        else apps.patch_namespaced_daemon_set
    )
    try:
        patch(
            ref.name,
            ref.namespace,
            body,
            _content_type=STRATEGIC_MERGE,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except ApiException as exc:
        where = f"{ref.workload} {ref.namespace}/{ref.name}"
        refused = f"{ref.cluster.name}: {where} refused image {request.image}"
        raise write_error(ref.cluster.name, exc, refused=refused, type="ImageRejected") from None
    return _state(ref, _read(ref))


@activity.defn(no_thread_cancel_exception=True)
def wait_workload_rollout(request: WaitRollout) -> WorkloadState:
    """Polls until the rollout of `generation` completes, heartbeating what is awaited (see
    activities/polling.py for the timeout and the progress deadline)."""
    ref = request.workload
    what = f"{ref.workload} {ref.namespace}/{ref.name}"

    def look() -> Look[WorkloadState]:
        state = _state(ref, _read(ref))
        observed = state.observed_generation >= request.generation
        if state.failure and observed:
            raise ApplicationError(
                f"{ref.cluster.name}: {what} rollout of {state.image} failed: {state.failure}",
                type="RolloutFailed",
                non_retryable=True,
            )
        counts = (
            f"{state.updated}/{state.desired} updated, {state.ready}/{state.desired} ready, "
            f"{state.available}/{state.desired} available"
        )
        return Look(
            value=state,
            done=observed and state.updated == state.available == state.desired,
            waiting_for=f"{what} on {state.image}: {counts}"
            + ("" if observed else ", change not yet observed"),
            progress=(state.observed_generation, state.updated, state.ready, state.available),
        )

    return wait_until(
        look,
        cluster=ref.cluster.name,
        goal=f"rollout of {what}",
        timeout_seconds=request.timeout_seconds,
        timeout_type="RolloutTimeout",
    )


@activity.defn(no_thread_cancel_exception=True)
def preflight_addon(request: PreflightRequest) -> PreflightResult:
    """Reports clusters where the add-on (workload and container) does not exist.

    Clusters that cannot be reached are not reported here: the per-cluster workflow's
    health gate decides (skip or fail) as the rollout's options say.
    """
    target = request.operation
    assert isinstance(target, AddonTarget)
    problems: dict[str, str] = {}
    for cluster in request.clusters:
        activity.heartbeat(cluster.name)
        ref = WorkloadRef(
            cluster=cluster.ref(),
            namespace=target.namespace,
            name=target.name,
            workload=target.workload,
            container=target.container,
        )
        try:
            _state(ref, _read(ref))
        except ApplicationError as exc:
            if exc.non_retryable:
                problems[cluster.name] = str(exc)
        except Exception:  # unreachable: left to the per-cluster health gate
            continue
    return PreflightResult(problems=problems)
