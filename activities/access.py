"""Can Flotilla reach and manage a cluster? `probe_cluster` learns, in one visit,
reachability, version, identity, a first health reading and the permissions onboarding
needs that the credential lacks (SelfSubjectAccessReviews).

It only reads, so it runs before onboarding takes the cluster's lock.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.health import read_health
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


REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# Any verb on any resource of any group: allowed only to a credential allowed everything.
ANYTHING = Permission(verb="*", resource="*", group="*")
# Reviews in flight at once for one cluster (below the API client's connection pool size).
REVIEW_CONCURRENCY = 6


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


def _review(api: Any, permission: Permission) -> bool:
    """Whether a SelfSubjectAccessReview allows `permission` to the credential."""
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
    answer = request(api, "POST", REVIEWS, body=review, timeout=PROBE_TIMEOUT)
    return bool(answer.get("status", {}).get("allowed", False))


def missing_permissions(api: Any, cluster: str) -> AccessReport:
    """Which of ONBOARDING_PERMISSIONS the credential lacks. One review of ANYTHING first:
    a credential allowed everything (cluster-admin) lacks none. Otherwise one review per
    permission, REVIEW_CONCURRENCY at a time, so every missing one is named."""
    missing: list[Permission] = []
    if not _review(api, ANYTHING):
        with ThreadPoolExecutor(REVIEW_CONCURRENCY, thread_name_prefix="review") as pool:
            allowed = pool.map(lambda p: _review(api, p), ONBOARDING_PERMISSIONS)
            missing = [p for p, ok in zip(ONBOARDING_PERMISSIONS, allowed, strict=True) if not ok]
    activity.logger.info(
        "%d of %d permissions missing",
        len(missing),
        len(ONBOARDING_PERMISSIONS),
        extra={"cluster": cluster},
    )
    return AccessReport(cluster=cluster, checked=len(ONBOARDING_PERMISSIONS), missing=missing)


@activity.defn(no_thread_cancel_exception=True)
def probe_cluster(ref: ClusterRef) -> ClusterProbe:
    """Everything onboarding learns before it takes the lock, in one visit: version,
    endpoint, identity ("" when kube-system may not be read), a first health reading
    (its node list gives the node count, 0 when nodes may not be listed) and the
    permissions the credential lacks. Fails retryably while the cluster does not answer;
    a 401 is non-retryable: the credential is wrong."""
    api = api_client(ref.credential)
    try:
        version = request(api, "GET", "/version", timeout=PROBE_TIMEOUT)
        uid = cluster_uid(api)
        answers = {"/version": version}  # read once, for the probe and the health reading

        def get(path: str) -> Any:
            return answers.pop(path, None) or request(api, "GET", path, timeout=PROBE_TIMEOUT)

        health = read_health(ref.name, get)
        access = missing_permissions(api, ref.name)
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
        node_count=health.nodes_total,
        uid=uid,
        health=health,
        access=access,
    )
