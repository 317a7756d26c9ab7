"""Applying a commit's bundles to one cluster with server-side apply (field manager
`flotilla`), previewing it with `dryRun=All`, and pruning what left Git.

What Flotilla placed on a cluster is recorded there, in the ConfigMap
`kube-system/flotilla-sync` (the SHA, and object keys per bundle), so pruning deletes only
objects Flotilla itself created, and a repeated apply (an activity retry) finds the work
done. Objects are created in dependency order (namespaces and cluster roles first) and
deleted in the reverse order. Kinds are resolved through the cluster's discovery: a kind
the cluster does not serve is refused naming the file and line that declares it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.git import load_repo
from activities.kube import REQUEST_TIMEOUT, api_client, api_error_message, status_message
from fleet.bundles import WORKLOAD_KINDS, Manifest, Repo
from fleet.rollout_models import PreflightRequest, PreflightResult
from fleet.sync_diff import applies_nothing, compare, dotted, released
from fleet.sync_models import (
    FIELD_MANAGER,
    INVENTORY_NAME,
    INVENTORY_NAMESPACE,
    ClusterDiff,
    CopiesAnswer,
    CopiesRequest,
    ObjectChange,
    PreviewRequest,
    PreviewResult,
    SyncClusterRequest,
    SyncTarget,
)
from fleet.sync_state import SyncState

APPLY = "application/apply-patch+yaml"
# Creation order; kinds not listed come after, in the order Git declares them.
_FIRST = ["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"]
_FIRST += ["ServiceAccount", "Role", "RoleBinding", "ResourceQuota", "LimitRange"]
# Seconds between heartbeats of a long sync activity (its heartbeat timeout is 20 s).
PULSE_SECONDS = 5.0
_discovery_lock = threading.Lock()
_discovery: dict[tuple[int, str], dict[str, tuple[str, bool]]] = {}


class Pulse:
    """Heartbeats at most every PULSE_SECONDS. A sync activity's heartbeat waits for the
    worker's event loop; one per object took ~40% of a drift check's time under load
    (py-spy, 200 clusters)."""

    def __init__(self) -> None:
        self._last = -PULSE_SECONDS

    def __call__(self, detail: str) -> None:
        now = time.monotonic()
        if now - self._last >= PULSE_SECONDS:
            activity.heartbeat(detail)
            self._last = now


def call(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str = "application/json",
    query: dict[str, str] | None = None,
) -> Any:
    """One JSON request; raises ApiException for a non-2xx answer."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    query_params = list((query or {}).items())
    method, url, headers, body, _ = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query_params,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(
        method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT
    )
    data = response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return json.loads(data) if data else None


def _resources(api: client.ApiClient, api_version: str) -> dict[str, tuple[str, bool]]:
    """kind -> (plural, namespaced) for one group/version, from discovery (cached)."""
    key = (id(api), api_version)
    with _discovery_lock:
        if key in _discovery:
            return _discovery[key]
    path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    try:
        listing = call(api, "GET", path)
    except ApiException as exc:
        if exc.status == 404:
            listing = {"resources": []}
        else:
            raise
    found = {
        r["kind"]: (r["name"], bool(r.get("namespaced")))
        for r in listing.get("resources", [])
        if "/" not in r["name"]
    }
    with _discovery_lock:
        _discovery[key] = found
    return found


class Resolved:
    """A manifest with its API path on one cluster."""

    def __init__(self, manifest: Manifest, bundle: str, plural: str, namespaced: bool):
        self.manifest = manifest
        self.bundle = bundle
        body = json.loads(json.dumps(manifest.body))
        meta = body["metadata"]
        if namespaced and not meta.get("namespace"):
            meta["namespace"] = "default"
        if not namespaced:
            meta.pop("namespace", None)
        self.body: dict[str, Any] = body
        namespace = meta.get("namespace", "")
        self.key = f"{manifest.api_version}/{manifest.kind}/{namespace}/{meta['name']}"
        self.path = object_path(manifest.api_version, plural, namespace, meta["name"])


def object_path(api_version: str, plural: str, namespace: str, name: str) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{scope}/{plural}/{name}"


def resolve(api: client.ApiClient, cluster: str, bundle: str, manifest: Manifest) -> Resolved:
    kinds = _resources(api, manifest.api_version)
    if manifest.kind not in kinds:
        raise ApplicationError(
            f"{manifest.source}: unknown kind {manifest.kind} ({manifest.api_version}) "
            f"on {cluster}",
            type="UnknownKind",
            non_retryable=True,
        )
    plural, namespaced = kinds[manifest.kind]
    return Resolved(manifest, bundle, plural, namespaced)


def split_key(key: str) -> tuple[str, str, str, str]:
    """`apiVersion/Kind/namespace/name` -> its four parts (apiVersion may hold a '/')."""
    parts = key.split("/")
    return "/".join(parts[:-3]), parts[-3], parts[-2], parts[-1]


def key_path(api: client.ApiClient, key: str) -> str | None:
    """The API path of an object key recorded earlier (None: the kind is no longer served)."""
    api_version, kind, namespace, name = split_key(key)
    kinds = _resources(api, api_version)
    if kind not in kinds:
        return None
    return object_path(api_version, kinds[kind][0], namespace, name)


def get(api: client.ApiClient, path: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = call(api, "GET", path)
        return obj
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def apply(api: client.ApiClient, obj: Resolved, *, dry_run: bool) -> dict[str, Any]:
    query = {"fieldManager": FIELD_MANAGER, "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    result: dict[str, Any] = call(
        api, "PATCH", obj.path, body=obj.body, content_type=APPLY, query=query
    )
    return result


def read_state(api: client.ApiClient) -> tuple[SyncState, str]:
    """The cluster's sync record and its resourceVersion ("" when absent)."""
    cm = get(api, f"/api/v1/namespaces/{INVENTORY_NAMESPACE}/configmaps/{INVENTORY_NAME}")
    if cm is None:
        return SyncState(), ""
    text = (cm.get("data") or {}).get("state", "{}")
    return SyncState.model_validate_json(text), cm["metadata"].get("resourceVersion", "")


def write_state(api: client.ApiClient, state: SyncState, version: str) -> None:
    """Writes the record; `version` guards against a concurrent writer (409: retried)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": INVENTORY_NAME,
            "namespace": INVENTORY_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "flotilla"},
        },
        "data": {"state": state.model_dump_json()},
    }
    base = f"/api/v1/namespaces/{INVENTORY_NAMESPACE}/configmaps"
    if version:
        body["metadata"]["resourceVersion"] = version
        call(api, "PUT", f"{base}/{INVENTORY_NAME}", body=body)
    else:
        call(api, "POST", base, body=body)


def _order(kind: str) -> int:
    return _FIRST.index(kind) if kind in _FIRST else len(_FIRST)


def desired(api: client.ApiClient, cluster: str, repo: Repo, bundles: list[str]) -> list[Resolved]:
    out = [
        resolve(api, cluster, name, m)
        for name in bundles
        if name in {b.name for b in repo.bundles}
        for m in repo.bundle(name).manifests
    ]
    return sorted(out, key=lambda r: _order(r.manifest.kind))


def sync_cluster(req: SyncClusterRequest) -> ClusterDiff:
    """Previews (dry_run) or applies one cluster's bundles; see the module doc."""
    ref, target = req.cluster, req.target
    if req.checks_only and not req.dry_run:
        raise ApplicationError("checks_only is for dry runs", type="BadRequest", non_retryable=True)
    api = api_client(ref.credential)
    repo = load_repo(target.repo, target.sha)
    bundles = target.bundles_for(ref.name)
    missing = [b for b in bundles if b not in {x.name for x in repo.bundles}]
    if missing:
        raise ApplicationError(
            f"bundle {missing[0]} is not in {target.sha[:12]}", type="BadTarget", non_retryable=True
        )
    try:
        state, version = read_state(api)
        wanted = desired(api, ref.name, repo, bundles)
        diff = ClusterDiff(
            cluster=ref.name,
            previous_sha=state.sha,
            bundles=bundles,
            gained=sorted(set(bundles) - set(state.bundles)),
            lost=sorted(set(state.bundles) - set(bundles)),
            placed_before=sum(len(keys) for keys in state.bundles.values()),
        )
        pulse = Pulse()
        for obj in [] if req.checks_only else wanted:
            pulse(obj.key)
            live = get(api, obj.path)
            if live is None:
                diff.changes.append(ObjectChange(key=obj.key, action="create", bundle=obj.bundle))
                if not req.dry_run:
                    apply(api, obj, dry_run=False)
                continue
            if applies_nothing(obj.body, live, manager=FIELD_MANAGER):  # no dry-run needed
                diff.unchanged += 1
                continue
            would = apply(api, obj, dry_run=True)
            found = compare(obj.body, would, live) + released(would, live, manager=FIELD_MANAGER)
            paths = [dotted(p) for p in found]
            if paths:
                diff.changes.append(
                    ObjectChange(key=obj.key, action="change", bundle=obj.bundle, paths=paths)
                )
                if not req.dry_run:
                    apply(api, obj, dry_run=False)
            else:
                diff.unchanged += 1
        wanted_keys = {o.key for o in wanted}
        gone = [
            (bundle, key)
            for bundle, keys in sorted(state.bundles.items())
            for key in keys
            if key not in wanted_keys
        ]
        kept: dict[str, list[str]] = {}
        for bundle, key in sorted(gone, key=lambda g: -_order(split_key(g[1])[1])):
            if bundle in req.keep:
                diff.changes.append(ObjectChange(key=key, action="retain", bundle=bundle))
                kept.setdefault(bundle, []).append(key)
                continue
            diff.changes.append(ObjectChange(key=key, action="delete", bundle=bundle))
            if not req.dry_run and (path := key_path(api, key)):
                try:
                    call(api, "DELETE", path, query={"propagationPolicy": "Background"})
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        deletes = diff.count("delete")
        if (
            req.dry_run
            and deletes
            and not target.prune_approved_by
            and deletes * 100 > target.prune_threshold * max(diff.placed_before, 1)
        ):
            share = round(deletes * 100 / max(diff.placed_before, 1))
            diff.approval = (
                f"prune guard: would delete {deletes} of {diff.placed_before} placed objects "
                f"({share}% > {target.prune_threshold}%)"
            )
        if not req.dry_run:
            new_bundles: dict[str, list[str]] = {}
            for obj in wanted:
                new_bundles.setdefault(obj.bundle, []).append(obj.key)
            for bundle, keys in kept.items():
                new_bundles.setdefault(bundle, []).extend(keys)
            new = state.model_copy(
                update={
                    "sha": target.sha,
                    "repo": target.repo,
                    "bundles": {b: sorted(set(k)) for b, k in sorted(new_bundles.items())},
                    "retained": sorted(kept),
                }
            )
            if new != state or not version:
                write_state(api, new, version)
    except ApiException as exc:
        if exc.status in (400, 403, 422):
            raise ApplicationError(
                f"{ref.name}: refused: {status_message(exc)}",
                type="ApplyRefused",
                non_retryable=True,
            ) from None
        raise ApplicationError(api_error_message(ref.name, exc)) from None
    except ApplicationError:
        raise
    except Exception as exc:  # not reachable: retryable, secret-free
        raise ApplicationError(api_error_message(ref.name, exc), type="Unreachable") from None
    return diff


@activity.defn(no_thread_cancel_exception=True)
def preview_clusters(req: PreviewRequest) -> PreviewResult:
    """What a sync would do on each cluster (dry run; creates counted, not listed); a
    cluster that cannot be read, or has a problem, says so in its diff instead of failing
    the batch (an unreachable one is no problem: the engine skips or counts it, as the
    rollout's options say)."""
    diffs = []
    pulse = Pulse()
    for ref in req.clusters:
        pulse(ref.name)
        try:
            one = SyncClusterRequest(cluster=ref, target=req.target, checks_only=req.checks_only)
            diffs.append(sync_cluster(one).compact())
        except ApplicationError as exc:
            if exc.type == "BadBundle":
                raise
            if exc.type == "Unreachable" or (not exc.non_retryable and exc.type != "UnknownKind"):
                diffs.append(ClusterDiff(cluster=ref.name, unreachable=exc.message))
            else:
                diffs.append(ClusterDiff(cluster=ref.name, problem=exc.message))
    return PreviewResult(diffs=diffs)


@activity.defn(no_thread_cancel_exception=True)
def apply_cluster(req: SyncClusterRequest) -> ClusterDiff:
    """Previews (dry_run) or applies one cluster's bundles at the target's SHA."""
    return sync_cluster(req)


def _workload_ready(obj: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    if obj.get("kind") == "DaemonSet":
        wanted = status.get("desiredNumberScheduled", 0)
        return bool(wanted) and status.get("numberAvailable", 0) >= wanted
    replicas = spec.get("replicas", 1)
    return status.get("availableReplicas", 0) >= replicas and status.get("readyReplicas", 0) >= (
        replicas
    )


@activity.defn(no_thread_cancel_exception=True)
def wait_healthy_copy(req: CopiesRequest) -> CopiesAnswer:
    """Waits until every workload object of `req.objects` is available on one of
    `req.clusters`; an empty answer when none is in `timeout_seconds` (the caller keeps its
    copy)."""
    workloads = [k for k in req.objects if split_key(k)[1] in WORKLOAD_KINDS]

    def healthy_on() -> str:
        for ref in req.clusters:
            try:
                api = api_client(ref.credential)
                paths = [key_path(api, k) for k in workloads]
                if all(p and _workload_ready(get(api, p)) for p in paths):
                    return ref.name
            except Exception:  # an unreachable copy is not healthy
                continue
        return ""

    names = ", ".join(r.name for r in req.clusters) or "no cluster"
    deadline = time.monotonic() + req.timeout_seconds
    while True:
        found = healthy_on()
        if found or time.monotonic() >= deadline:
            return CopiesAnswer(healthy_on=found)
        activity.heartbeat(f"waiting for a healthy copy on {names}")
        time.sleep(2)


@activity.defn(no_thread_cancel_exception=True)
def preflight_sync(req: PreflightRequest) -> PreflightResult:
    """The sync's live checks before any cluster changes: every kind served (a problem),
    and the prune guard (a cluster losing more than the threshold's share: the run asks
    for an approval). No object is read: the preview (SyncPlan) and each child do that."""
    target = req.operation
    if not isinstance(target, SyncTarget):
        raise ApplicationError("preflight_sync takes a sync target", non_retryable=True)
    answer = preview_clusters(
        PreviewRequest(clusters=[c.ref() for c in req.clusters], target=target, checks_only=True)
    )
    return PreflightResult(
        problems={d.cluster: d.problem for d in answer.diffs if d.problem},
        asks={d.cluster: d.approval for d in answer.diffs if d.approval},
    )
