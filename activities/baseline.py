"""The onboarding baseline: what Flotilla installs in every cluster it manages.

Namespace `flotilla-system`, ServiceAccount `flotilla`, ClusterRole and ClusterRoleBinding
`flotilla` (read access for the fleet agent), and ConfigMap `flotilla-identity` naming the
cluster and its labels. Installing creates each object, and only where it exists already
reads and compares it: an object that matches is not written, so running it twice (or
after a crash) changes nothing; a drifted object is replaced with its resourceVersion as
precondition.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.access import BASELINE_NAMESPACE, cluster_uid
from activities.kube import api_client, api_error_message, request
from fleet.models import (
    BaselineRemoval,
    BaselineResult,
    BaselineSpec,
    BaselineTarget,
    ClusterRef,
)

NAME = "flotilla"
IDENTITY = "flotilla-identity"
MANAGED = {"app.kubernetes.io/managed-by": "flotilla"}


@dataclass(frozen=True)
class _Object:
    kind: str
    collection: str  # API path of the collection the object is created in
    body: dict[str, Any]
    compared: tuple[str, ...]  # top-level fields that must equal the desired ones

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def _meta(name: str, namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(MANAGED)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def baseline_objects(cluster: str, labels: dict[str, str]) -> list[_Object]:
    """The baseline in creation order (remove in reverse)."""
    ns = BASELINE_NAMESPACE
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    return [
        _Object(
            "Namespace",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns)},
            (),
        ),
        _Object(
            "ServiceAccount",
            f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, ns)},
            (),
        ),
        _Object(
            "ClusterRole",
            f"{rbac}/clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(NAME),
                "rules": [
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}
                ],
            },
            ("rules",),
        ),
        _Object(
            "ClusterRoleBinding",
            f"{rbac}/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": _meta(NAME),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": NAME,
                },
                "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}],
            },
            ("roleRef", "subjects"),
        ),
        _Object(
            "ConfigMap",
            f"/api/v1/namespaces/{ns}/configmaps",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(IDENTITY, ns),
                "data": {"cluster": cluster, "labels": json.dumps(labels, sort_keys=True)},
            },
            ("data",),
        ),
    ]


def _matches(current: dict[str, Any], obj: _Object) -> bool:
    labels = current.get("metadata", {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in MANAGED.items()):
        return False
    return all(current.get(field) == obj.body[field] for field in obj.compared)


def _ensure(api: Any, obj: _Object) -> str:
    """Makes one object match; returns "created", "updated" or "unchanged". Creating comes
    first, so a new cluster takes one request per object; an existing one is read and
    compared instead."""
    try:
        request(api, "POST", obj.collection, body=obj.body)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = request(api, "GET", obj.path)
    if current.get("metadata", {}).get("deletionTimestamp"):
        # E.g. the namespace of a recent offboarding, still terminating: retry until gone.
        raise ApplicationError(f"{obj} is being deleted; retrying", type="BaselineFailed")
    if _matches(current, obj):
        return "unchanged"
    desired = json.loads(json.dumps(obj.body))
    metadata = current.get("metadata", {})
    desired["metadata"]["labels"] = {**(metadata.get("labels") or {}), **MANAGED}
    desired["metadata"]["resourceVersion"] = metadata.get("resourceVersion")
    request(api, "PUT", obj.path, body=desired)
    return "updated"


def _cluster_failure(ref: ClusterRef, exc: Exception) -> ApplicationError:
    non_retryable = isinstance(exc, ApiException) and exc.status in (401, 403, 422)
    return ApplicationError(
        api_error_message(ref.name, exc), type="BaselineFailed", non_retryable=non_retryable
    )


def _identity_problem(target: BaselineTarget, live: str) -> ApplicationError | None:
    name, context = target.cluster.name, target.cluster.credential.context
    if not target.uid:
        return ApplicationError(
            f"{name}: the record has no cluster identity (onboarded before Flotilla recorded "
            f"kube-system UIDs), so nothing was deleted. Onboard {name} again to record it, "
            "or offboard with force to retire the record without touching the cluster",
            type="IdentityUnknown",
            non_retryable=True,
        )
    if live != target.uid:
        found = f"kube-system UID {live}" if live else "a cluster whose kube-system is unreadable"
        return ApplicationError(
            f"{name}: context {context} now reaches another cluster ({found}; the record "
            f"has {target.uid}), so nothing was deleted. Fix the kubeconfig, or offboard "
            "with force to retire the record without touching that cluster",
            type="IdentityMismatch",
            non_retryable=True,
        )
    return None


def install_baseline(spec: BaselineSpec, progress: Callable[[str], None]) -> BaselineResult:
    """Creates or repairs every baseline object, calling `progress` after each one (the
    onboarding activity heartbeats there)."""
    ref = spec.cluster
    api = api_client(ref.credential)
    result = BaselineResult(cluster=ref.name)
    for obj in baseline_objects(ref.name, spec.labels):
        try:
            outcome = _ensure(api, obj)
        except ApplicationError as exc:
            raise ApplicationError(f"{ref.name}: {exc.message}", type=exc.type) from None
        except Exception as exc:
            raise _cluster_failure(ref, exc) from None
        getattr(result, outcome).append(str(obj))
        progress(str(obj))
    activity.logger.info(
        "baseline: created %s, updated %s",
        result.created,
        result.updated,
        extra={"cluster": ref.name},
    )
    return result


@activity.defn(no_thread_cancel_exception=True)
def remove_baseline(target: BaselineTarget) -> BaselineRemoval:
    """Deletes every baseline object (already-absent ones are fine), after checking that
    the credential still reaches the cluster with the recorded kube-system UID.

    A different or unknown identity is a non-retryable `IdentityMismatch` /
    `IdentityUnknown` with nothing deleted; a cluster that cannot be read fails retryably
    (`BaselineFailed`), also with nothing deleted."""
    ref = target.cluster
    api = api_client(ref.credential)
    try:
        live = cluster_uid(api)
    except Exception as exc:
        raise _cluster_failure(ref, exc) from None
    if problem := _identity_problem(target, live):
        raise problem
    result = BaselineRemoval(cluster=ref.name)
    for obj in reversed(baseline_objects(ref.name, {})):
        try:
            request(api, "DELETE", obj.path)
            result.removed.append(str(obj))
        except ApiException as exc:
            if exc.status != 404:
                raise _cluster_failure(ref, exc) from None
            result.absent.append(str(obj))
        except Exception as exc:
            raise _cluster_failure(ref, exc) from None
        activity.heartbeat(str(obj))
    return result
