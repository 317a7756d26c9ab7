"""One health reading of a cluster: API readiness, Ready nodes, kube-system workloads.

Never raises for a sick cluster: an API that does not answer within HEALTH_TIMEOUT yields a
`Health.UNREACHABLE` report, so callers (sweep, rollout gates) decide what it means. The
activity heartbeats after every request (at most ~11 s apart), so callers give it a
heartbeat timeout and a crashed worker is noticed in seconds, not at the start-to-close limit
(run as a local activity, e.g. a rollout child's health gate, it does not heartbeat).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube import api_client, api_error_message, heartbeat, request
from fleet.models import ClusterRef, Health, HealthBatch, HealthReport, HealthReports

# (connect, read) seconds per request: a hanging cluster is reported within ~10 s.
HEALTH_TIMEOUT = (3.0, 8.0)
# Clusters read at once by one `check_clusters_health` call.
BATCH_CONCURRENCY = 10


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _available(workload: dict[str, Any]) -> bool:
    status = workload.get("status", {})
    if workload.get("kind") == "DaemonSet" or "desiredNumberScheduled" in status:
        desired = status.get("desiredNumberScheduled", 0)
        return status.get("numberAvailable", 0) >= desired
    desired = workload.get("spec", {}).get("replicas", 1)
    return status.get("availableReplicas", 0) >= desired


def read_health(cluster: str, get: Callable[[str], Any]) -> HealthReport:
    """One reading of `cluster` through `get` (a GET of an API path that raises as
    `request` does). Never raises: an API that cannot be reached yields UNREACHABLE, one
    that answers badly DEGRADED with the reason."""
    report = HealthReport(cluster=cluster, health=Health.UNKNOWN, checked_at=datetime.now(UTC))
    try:
        get("/readyz")
        report.api_ready = True
    except ApiException as exc:
        # The API answers but is not ready: degraded; go on and read what we can.
        report.reason = f"readyz: {api_error_message(cluster, exc)}"
    except Exception as exc:
        report.health = Health.UNREACHABLE
        report.reason = api_error_message(cluster, exc)
        return report
    problems = [report.reason] if report.reason else []
    try:
        version = get("/version")
        report.version = str(version.get("gitVersion", ""))
        nodes = get("/api/v1/nodes").get("items", [])
        report.nodes_total = len(nodes)
        report.nodes_ready = sum(_node_ready(n) for n in nodes)
        workloads = []
        for kind in ("deployments", "daemonsets"):
            path = f"/apis/apps/v1/namespaces/kube-system/{kind}"
            items = get(path).get("items", [])
            workloads += [{"kind": "DaemonSet" if kind == "daemonsets" else "", **w} for w in items]
    except Exception as exc:
        report.health = Health.DEGRADED
        report.reason = "; ".join([*problems, api_error_message(cluster, exc)])
        return report
    report.system_workloads_total = len(workloads)
    report.system_workloads_available = sum(_available(w) for w in workloads)
    if report.nodes_ready < report.nodes_total:
        problems.append(
            f"{report.nodes_total - report.nodes_ready}/{report.nodes_total} nodes not Ready"
        )
    unavailable = sorted(w["metadata"]["name"] for w in workloads if not _available(w))
    if unavailable:
        problems.append(f"kube-system not available: {', '.join(unavailable)}")
    report.health = Health.DEGRADED if problems or not report.api_ready else Health.HEALTHY
    report.reason = "; ".join(problems)
    return report


@activity.defn(no_thread_cancel_exception=True)
def check_cluster_health(ref: ClusterRef) -> HealthReport:
    return _check(ref)


@activity.defn(no_thread_cancel_exception=True)
def check_clusters_health(batch: HealthBatch) -> HealthReports:
    """One reading of each cluster of the batch, BATCH_CONCURRENCY at a time, heartbeating
    after every request: a rollout's wave check takes one activity call per chunk of
    clusters instead of one per cluster (three parent history events each)."""
    with ThreadPoolExecutor(BATCH_CONCURRENCY, thread_name_prefix="health") as pool:
        # Each reading runs in a copy of this activity's context (heartbeat, logger).
        calls = [pool.submit(contextvars.copy_context().run, _check, r) for r in batch.clusters]
        return HealthReports(reports=[call.result() for call in calls])


def _check(ref: ClusterRef) -> HealthReport:
    try:
        api = api_client(ref.credential)
    except ApplicationError as exc:  # the reference cannot be resolved on this worker
        return HealthReport(
            cluster=ref.name,
            health=Health.UNREACHABLE,
            reason=exc.message,
            checked_at=datetime.now(UTC),
        )

    def get(path: str) -> Any:
        answer = request(api, "GET", path, timeout=HEALTH_TIMEOUT)
        heartbeat(f"read {path} of {ref.name}")
        return answer

    report = read_health(ref.name, get)
    activity.logger.info("health %s", report.health, extra={"cluster": ref.name})
    return report
