"""Can Flotilla reach and manage a cluster? Reachability, version and identity
(`probe_cluster`), the permissions onboarding needs (`check_onboarding_access`, via
SelfSubjectAccessReviews).

Both only read, so they run before onboarding takes the cluster's lock.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube import api_client, api_error_message, request
from fleet.models import AccessReport, ClusterProbe, ClusterRef, Permission

# A probe must answer fast: the workflow retries a few times, then calls the cluster dead.
PROBE_TIMEOUT = (3.0, 8.0)
BASELINE_NAMESPACE = "flotilla-system"
RBAC = "rbac.authorization.k8s.io"


def _manage(resource: str, group: str = "", namespace: str = "") -> list[Permission]:
    return [
        Permission(verb=verb, resource=resource, group=group, namespace=namespace)
        for verb in ("get", "create", "update")
    ]


# What onboarding does: install the baseline, then read health.
ONBOARDING_PERMISSIONS: list[Permission] = [
    *_manage("namespaces"),
    *_manage("serviceaccounts", namespace=BASELINE_NAMESPACE),
    *_manage("configmaps", namespace=BASELINE_NAMESPACE),
    *_manage("clusterroles", group=RBAC),
    *_manage("clusterrolebindings", group=RBAC),
    Permission(verb="list", resource="nodes"),
    Permission(verb="list", resource="deployments", group="apps", namespace="kube-system"),
    Permission(verb="list", resource="daemonsets", group="apps", namespace="kube-system"),
]


def _allowed(api: Any, path: str) -> Any:
    """GET `path`; None when the credential may not read it (the permission check says so)."""
    try:
        return request(api, "GET", path, timeout=PROBE_TIMEOUT)
    except ApiException as exc:
        if exc.status != 403:
            raise
        return None


def cluster_uid(api: Any) -> str:
    """The cluster's identity: the UID of its kube-system namespace ("" when forbidden)."""
    namespace = _allowed(api, "/api/v1/namespaces/kube-system")
    return str(namespace["metadata"]["uid"]) if namespace else ""


@activity.defn
def probe_cluster(ref: ClusterRef) -> ClusterProbe:
    """Version, endpoint, node count and identity (0 and "" when nodes or namespaces may
    not be read: the permission check names that). Fails retryably while the cluster does
    not answer; a 401 is non-retryable: the credential is wrong."""
    api = api_client(ref.credential)
    try:
        version = request(api, "GET", "/version", timeout=PROBE_TIMEOUT)
        nodes = (_allowed(api, "/api/v1/nodes") or {}).get("items", [])
        uid = cluster_uid(api)
    except ApiException as exc:
        message = api_error_message(ref.name, exc)
        if exc.status == 401:
            raise ApplicationError(
                f"{message}: the credential of context {ref.credential.context} is not accepted",
                type="Unauthorized",
                non_retryable=True,
            ) from None
        raise ApplicationError(message, type="ClusterError") from None
    except Exception as exc:  # connection refused, timeouts, TLS: the cluster is not reachable
        raise ApplicationError(api_error_message(ref.name, exc), type="Unreachable") from None
    return ClusterProbe(
        cluster=ref.name,
        version=str(version.get("gitVersion", "")),
        api_endpoint=api.configuration.host,
        node_count=len(nodes),
        uid=uid,
    )


@activity.defn
def check_onboarding_access(ref: ClusterRef) -> AccessReport:
    """Asks the cluster, one SelfSubjectAccessReview per permission, which of
    ONBOARDING_PERMISSIONS the credential lacks."""
    api = api_client(ref.credential)
    missing: list[Permission] = []
    for permission in ONBOARDING_PERMISSIONS:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": permission.verb,
                    "group": permission.group,
                    "resource": permission.resource,
                    "namespace": permission.namespace,
                }
            },
        }
        try:
            answer = request(
                api,
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                body=review,
            )
        except ApiException as exc:
            raise ApplicationError(api_error_message(ref.name, exc), type="ClusterError") from None
        except Exception as exc:
            raise ApplicationError(api_error_message(ref.name, exc), type="Unreachable") from None
        if not answer.get("status", {}).get("allowed", False):
            missing.append(permission)
        activity.heartbeat(f"{permission.verb} {permission.resource}")
    activity.logger.info(
        "%d of %d permissions missing",
        len(missing),
        len(ONBOARDING_PERMISSIONS),
        extra={"cluster": ref.name},
    )
    return AccessReport(cluster=ref.name, checked=len(ONBOARDING_PERMISSIONS), missing=missing)
