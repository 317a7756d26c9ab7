"""The `annotate` kind's activities: read and write one kube-system annotation."""

from __future__ import annotations

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.kube import REQUEST_TIMEOUT, api_client, api_error_message
from fleet.models import ClusterRef, Model
from fleet.rollout_models import PreflightRequest, PreflightResult
from tests.operations.annotate_target import PREFIX


class Annotation(Model):
    cluster: ClusterRef
    key: str
    value: str = ""


def _namespace(ref: ClusterRef) -> k8s.V1Namespace:
    core = k8s.CoreV1Api(api_client(ref.credential))
    namespace: k8s.V1Namespace = core.read_namespace(
        "kube-system", _request_timeout=REQUEST_TIMEOUT
    )
    return namespace


@activity.defn
def read_annotation(request: Annotation) -> Annotation:
    metadata = _namespace(request.cluster).metadata
    annotations = (metadata.annotations if metadata else None) or {}
    return request.model_copy(update={"value": annotations.get(PREFIX + request.key, "")})


@activity.defn
def write_annotation(request: Annotation) -> Annotation:
    """Idempotent: a merge patch of one key."""
    core = k8s.CoreV1Api(api_client(request.cluster.credential))
    body = {"metadata": {"annotations": {PREFIX + request.key: request.value}}}
    core.patch_namespace("kube-system", body, _request_timeout=REQUEST_TIMEOUT)
    return request


@activity.defn
def preflight_annotate(request: PreflightRequest) -> PreflightResult:
    problems = {}
    for cluster in request.clusters:
        try:
            _namespace(cluster.ref())
        except ApiException as exc:
            problems[cluster.name] = api_error_message(cluster.name, exc)
    return PreflightResult(problems=problems)
