"""Kubernetes upgrades through Cluster API: read versions, set them and wait.

A workload cluster's control plane is the KubeadmControlPlane `<cluster>-control-plane` and
its workers the MachineDeployments labelled `cluster.x-k8s.io/cluster-name=<cluster>`, in
the management cluster's namespace (`ManagementRef`). Each upgrade activity sets a version
(idempotent: no write when already set), then polls until the objects settle, heartbeating,
so a retry after a crash resumes the wait without writing again. CAPI's webhook refusing a
version (422), a condition reporting an error and objects making no progress for the
progress deadline (activities/polling.py) are non-retryable: retrying changes nothing.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube import REQUEST_TIMEOUT, api_client, api_error_message, write_error
from activities.polling import Look, wait_until
from fleet.rollout_models import (
    CapiObjectState,
    CapiRequest,
    CapiState,
    PreflightRequest,
    PreflightResult,
    VersionCheck,
    VersionReport,
)
from fleet.versions import VersionError, node_skew_problem, parse_version, upgrade_problem

CAPI = ("cluster.x-k8s.io", "v1beta1")
CONTROL_PLANE = ("controlplane.cluster.x-k8s.io", "v1beta1")
MERGE_PATCH = "application/merge-patch+json"


def _objects(request: CapiRequest) -> tuple[client.CustomObjectsApi, dict, list[dict]]:
    api = client.CustomObjectsApi(api_client(request.management.credential))
    namespace = request.management.namespace
    try:
        kcp = api.get_namespaced_custom_object(
            *CONTROL_PLANE,
            namespace,
            "kubeadmcontrolplanes",
            f"{request.cluster}-control-plane",
            _request_timeout=REQUEST_TIMEOUT,
        )
        mds = api.list_namespaced_custom_object(
            *CAPI,
            namespace,
            "machinedeployments",
            label_selector=f"cluster.x-k8s.io/cluster-name={request.cluster}",
            _request_timeout=REQUEST_TIMEOUT,
        )
    except ApiException as exc:
        if exc.status == 404:
            raise ApplicationError(
                f"{request.cluster}: no KubeadmControlPlane {request.cluster}-control-plane in "
                f"namespace {namespace} of the management cluster",
                type="NoClusterAPI",
                non_retryable=True,
            ) from None
        raise ApplicationError(api_error_message("management", exc)) from None
    except Exception as exc:  # not reachable (urllib3, TLS): retryable, message secret-free
        raise ApplicationError(api_error_message("management", exc), type="Unreachable") from None
    items: list[dict] = mds.get("items", [])  # type: ignore[attr-defined]
    return api, kcp, sorted(items, key=lambda o: o["metadata"]["name"])  # type: ignore[return-value]


def _failure(obj: dict) -> str:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("status") == "False" and cond.get("severity") == "Error":
            return f"{cond['type']}: {cond.get('reason', '')}: {cond.get('message', '')}".strip()
    return ""


def _control_plane(obj: dict) -> CapiObjectState:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    return CapiObjectState(
        kind="KubeadmControlPlane",
        name=obj["metadata"]["name"],
        spec_version=spec.get("version", ""),
        status_version=status.get("version", ""),
        replicas=spec.get("replicas", 1),
        updated=status.get("updatedReplicas", 0),
        ready=status.get("readyReplicas", 0),
        available=status.get("readyReplicas", 0) - status.get("unavailableReplicas", 0),
        generation=obj["metadata"].get("generation", 0),
        observed_generation=status.get("observedGeneration", 0),
        failure=_failure(obj),
    )


def _worker(obj: dict) -> CapiObjectState:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    return CapiObjectState(
        kind="MachineDeployment",
        name=obj["metadata"]["name"],
        spec_version=spec.get("template", {}).get("spec", {}).get("version", ""),
        replicas=spec.get("replicas", 0),
        updated=status.get("updatedReplicas", 0),
        ready=status.get("readyReplicas", 0),
        available=status.get("availableReplicas", 0),
        generation=obj["metadata"].get("generation", 0),
        observed_generation=status.get("observedGeneration", 0),
        failure=_failure(obj),
    )


def _state(request: CapiRequest) -> tuple[client.CustomObjectsApi, CapiState]:
    api, kcp, mds = _objects(request)
    state = CapiState(
        cluster=request.cluster,
        control_plane=_control_plane(kcp),
        workers=[_worker(md) for md in mds],
    )
    return api, state


@activity.defn(no_thread_cancel_exception=True)
def read_capi_state(request: CapiRequest) -> CapiState:
    return _state(request)[1]


def _patch(api: client.CustomObjectsApi, request: CapiRequest, target: tuple, body: dict) -> None:
    group, version, plural, name = target
    try:
        api.patch_namespaced_custom_object(
            group,
            version,
            request.management.namespace,
            plural,
            name,
            body,
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except ApiException as exc:
        refused = f"{request.cluster}: {name} refused version {request.version}"
        raise write_error("management", exc, refused=refused, type="VersionRejected") from None


def upgrade_control_plane(request: CapiRequest) -> CapiState:
    """Sets KubeadmControlPlane spec.version (no write when already set) and waits until
    the control plane settles at it, heartbeating the progress."""
    api, state = _state(request)
    current = state.control_plane.spec_version
    if current != request.version:
        if problem := upgrade_problem(current, request.version):
            raise ApplicationError(
                f"{request.cluster}: {problem}", type="VersionRejected", non_retryable=True
            )
        target = (*CONTROL_PLANE, "kubeadmcontrolplanes", state.control_plane.name)
        _patch(api, request, target, {"spec": {"version": request.version}})
    return _wait(request, lambda s: [s.control_plane])


def upgrade_workers(request: CapiRequest) -> CapiState:
    """Sets every MachineDeployment's version not yet at the target (never above the
    control plane) and waits until all settle, heartbeating the progress."""
    api, state = _state(request)
    if problem := node_skew_problem(state.control_plane.status_version, request.version):
        raise ApplicationError(
            f"{request.cluster}: {problem}", type="VersionRejected", non_retryable=True
        )
    for md in state.workers:
        if md.spec_version != request.version:
            body = {"spec": {"template": {"spec": {"version": request.version}}}}
            _patch(api, request, (*CAPI, "machinedeployments", md.name), body)
    return _wait(request, lambda s: s.workers)


@activity.defn(no_thread_cancel_exception=True)
def upgrade_cluster(request: CapiRequest) -> CapiState:
    """The control plane, then the workers (as `upgrade_control_plane` then
    `upgrade_workers`), in one activity: a rollout child saves a round trip through the
    server between the two waits. A retry redoes both; the first finds its part done."""
    upgrade_control_plane(request)
    return upgrade_workers(request)


def _wait(request: CapiRequest, pick: Any) -> CapiState:
    """Polls until the picked objects settle at the version (see activities/polling.py for
    the timeout and the progress deadline)."""

    def look() -> Look[CapiState]:
        state = _state(request)[1]
        objects: list[CapiObjectState] = pick(state)
        for obj in objects:
            if obj.failure:
                raise ApplicationError(
                    f"{request.cluster}: {obj.kind} {obj.name} upgrade failed: {obj.failure}",
                    type="UpgradeFailed",
                    non_retryable=True,
                )
        waiting = [o for o in objects if not o.settled_at(request.version)]
        return Look(
            value=state,
            done=not waiting,
            waiting_for="; ".join(_waiting_for(o, request.version) for o in waiting),
            progress=tuple(
                (o.name, o.observed_generation, o.status_version, o.updated, o.ready, o.available)
                for o in objects
            ),
        )

    return wait_until(
        look,
        cluster=request.cluster,
        goal=f"version {request.version}",
        timeout_seconds=request.timeout_seconds,
        timeout_type="UpgradeTimeout",
    )


def _waiting_for(obj: CapiObjectState, version: str) -> str:
    """What keeps one object from being settled, in words."""
    text = (
        f"{obj.kind} {obj.name} at {version}: {obj.updated}/{obj.replicas} updated, "
        f"{obj.ready}/{obj.replicas} ready"
    )
    if obj.ready < obj.replicas:
        text += f" ({obj.replicas - obj.ready} machine(s) not Ready)"
    if obj.observed_generation < obj.generation:
        text += ", change not yet observed"
    if obj.kind == "KubeadmControlPlane" and obj.status_version != version:
        text += f", reports {obj.status_version or 'no version'}"
    return text


@activity.defn(no_thread_cancel_exception=True)
def read_cluster_versions(request: VersionCheck) -> VersionReport:
    """The versions the cluster reports, with every mismatch against `request.version`."""
    api = api_client(request.cluster.credential)
    name = request.cluster.name
    try:
        api_version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT).git_version
        nodes = client.CoreV1Api(api).list_node(_request_timeout=REQUEST_TIMEOUT).items
    except Exception as exc:  # ApiException, urllib3, TLS: retryable, message secret-free
        raise ApplicationError(api_error_message(name, exc)) from None
    kubelets = {
        n.metadata.name: n.status.node_info.kubelet_version  # type: ignore[union-attr]
        for n in nodes
    }
    problems = []
    if api_version != request.version:
        problems.append(f"API server reports {api_version}")
    problems += [
        f"node {n} runs kubelet {v}" for n, v in sorted(kubelets.items()) if v != request.version
    ]
    return VersionReport(cluster=name, api_version=api_version, nodes=kubelets, problems=problems)


@activity.defn(no_thread_cancel_exception=True)
def preflight_k8s(request: PreflightRequest) -> PreflightResult:
    """Checks each cluster's live Cluster API versions against the target; touches nothing."""
    target = getattr(request.operation, "version", "")
    problems: dict[str, str] = {}
    for cluster in request.clusters:
        activity.heartbeat(cluster.name)
        if cluster.management is None:
            problems[cluster.name] = "no Cluster API management reference in its record"
            continue
        try:
            state = _state(CapiRequest(cluster=cluster.name, management=cluster.management))[1]
            current = state.control_plane.spec_version
            problem = upgrade_problem(current, target)
            for md in state.workers:
                problem = problem or node_skew_problem(current, md.spec_version)
            parse_version(target)
        except (ApplicationError, VersionError) as exc:
            problem = str(exc)
        except Exception as exc:  # the management cluster did not answer
            problem = api_error_message("management", exc)
        if problem:
            problems[cluster.name] = problem
    return PreflightResult(problems=problems)
