"""What every real cluster runs, seen through the real kubectl: namespace lifecycle,
endpoints, events, logs, metrics, OpenAPI and protobuf bodies, simulated image pulls."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest

from tests.lab.conftest import Kubectl, ThreadedLab

NS = "services-test"
WAIT = 30.0

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: services-test}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def eventually(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def get_json(kubectl: Kubectl, *args: str) -> dict:
    return json.loads(kubectl.ok("get", *args, "-o", "json"))


@pytest.fixture(scope="module", autouse=True)
def namespace(kubectl: Kubectl) -> None:
    kubectl.ok("create", "namespace", NS)


def test_new_namespace_gets_default_service_account_and_root_ca(
    lab: ThreadedLab, kubectl: Kubectl
) -> None:
    eventually(
        lambda: kubectl("get", "serviceaccount", "default", "-n", NS).returncode == 0,
        "default ServiceAccount",
    )
    eventually(
        lambda: kubectl("get", "configmap", "kube-root-ca.crt", "-n", NS).returncode == 0,
        "kube-root-ca.crt",
    )
    ca = get_json(kubectl, "configmap", "kube-root-ca.crt", "-n", NS)["data"]["ca.crt"]
    tls = lab.lab.clusters["eu-dev-1"].tls  # the cluster's own CA bundle
    assert tls is not None and ca == tls.trust_pem.decode()
    kubectl.ok("delete", "configmap", "kube-root-ca.crt", "-n", NS)
    eventually(
        lambda: kubectl("get", "configmap", "kube-root-ca.crt", "-n", NS).returncode == 0,
        "kube-root-ca.crt published again",
    )


def test_namespace_is_terminating_until_content_with_finalizers_is_gone(
    kubectl: Kubectl,
) -> None:
    kubectl.ok("create", "namespace", "doomed")
    held = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: doomed, "
        "finalizers: [example.com/hold]}\n"
    )
    kubectl.ok("apply", "-f", "-", stdin=held)
    kubectl.ok("delete", "namespace", "doomed", "--wait=false")
    ns = get_json(kubectl, "namespace", "doomed")
    assert ns["status"]["phase"] == "Terminating"
    assert ns["spec"]["finalizers"] == ["kubernetes"]

    def finalizers_reported() -> bool:
        conditions = get_json(kubectl, "namespace", "doomed")["status"].get("conditions", [])
        return any(
            c["type"] == "NamespaceFinalizersRemaining" and c["status"] == "True"
            for c in conditions
        )

    eventually(finalizers_reported, "NamespaceFinalizersRemaining")
    assert kubectl("create", "configmap", "late", "-n", "doomed").returncode != 0
    kubectl.ok(
        "patch",
        "configmap",
        "held",
        "-n",
        "doomed",
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    eventually(lambda: kubectl("get", "namespace", "doomed").returncode != 0, "namespace gone")


def test_endpoint_slices_follow_pod_readiness(lab: ThreadedLab, kubectl: Kubectl) -> None:
    kubectl.ok(
        "create", "deployment", "web", "-n", NS, "--image=nginx:1.27", "--replicas=2", "--port=8080"
    )
    kubectl.ok(
        "patch",
        "deployment",
        "web",
        "-n",
        NS,
        "--type=json",
        "-p",
        '[{"op":"add","path":"/spec/template/spec/containers/0/ports/0/name","value":"http"}]',
    )
    kubectl.ok("apply", "-f", "-", stdin=SERVICE)
    kubectl.ok("rollout", "status", "deployment/web", "-n", NS, "--timeout=60s")

    def ready_addresses() -> list[bool]:
        slices = get_json(
            kubectl, "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=web"
        )["items"]
        return [e["conditions"]["ready"] for s in slices for e in s["endpoints"] or []]

    eventually(lambda: ready_addresses() == [True, True], "two ready endpoints")
    slices = get_json(kubectl, "endpointslices", "-n", NS)["items"]
    assert slices[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    endpoints = get_json(kubectl, "endpoints", "web", "-n", NS)
    assert len(endpoints["subsets"][0]["addresses"]) == 2

    lab.call(lab.lab.set_fault("eu-dev-1", "nodes-not-ready", {"count": 1}))  # the one worker
    try:
        eventually(lambda: ready_addresses() == [False, False], "endpoints not ready")
        endpoints = get_json(kubectl, "endpoints", "web", "-n", NS)
        assert len(endpoints["subsets"][0]["notReadyAddresses"]) == 2
    finally:
        lab.call(lab.lab.clear_fault("eu-dev-1", "nodes-not-ready"))
    eventually(lambda: ready_addresses() == [True, True], "ready again")
    events = kubectl.ok("get", "events", "-n", "default", "--field-selector", "reason=NodeNotReady")
    assert "NodeNotReady" in events


def test_events_logs_and_describe(kubectl: Kubectl) -> None:
    kubectl.ok("create", "deployment", "logged", "-n", NS, "--image=nginx:1.27")
    kubectl.ok("rollout", "status", "deployment/logged", "-n", NS, "--timeout=60s")
    out = kubectl.ok("get", "events", "-n", NS)
    for reason in ("ScalingReplicaSet", "SuccessfulCreate", "Scheduled", "Pulled", "Started"):
        assert reason in out, out
    logs = kubectl.ok("logs", "deployment/logged", "-n", NS)
    assert "starting container nginx from image nginx:1.27" in logs
    stamped = kubectl.ok("logs", "deployment/logged", "-n", NS, "--timestamps", "--tail=1")
    assert len(stamped.splitlines()) == 1 and stamped.split()[0].endswith("Z")
    describe = kubectl.ok("describe", "pod", "-n", NS, "-l", "app=logged")
    assert "Events:" in describe and "Successfully assigned" in describe


@pytest.mark.parametrize(
    ("image", "reason"),
    [("nginx:broken", "ImagePullBackOff"), ("NOT AN IMAGE", "InvalidImageName")],
)
def test_image_that_cannot_be_pulled_stalls_the_rollout(
    kubectl: Kubectl, image: str, reason: str
) -> None:
    name = f"bad-{reason.lower()}"
    kubectl.ok("create", "deployment", name, "-n", NS, "--image=nginx:1.27")
    kubectl.ok("rollout", "status", f"deployment/{name}", "-n", NS, "--timeout=60s")
    kubectl.ok(
        "patch",
        "deployment",
        name,
        "-n",
        NS,
        "--type=json",
        "-p",
        json.dumps(
            [
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image},
                {"op": "replace", "path": "/spec/progressDeadlineSeconds", "value": 2},
            ]
        ),
    )

    def waiting() -> list[dict]:
        pods = get_json(kubectl, "pods", "-n", NS, "-l", f"app={name}")["items"]
        return [
            cs["state"]["waiting"]
            for p in pods
            for cs in p["status"].get("containerStatuses", [])
            if cs["image"] == image and "waiting" in cs["state"]
        ]

    eventually(lambda: [w["reason"] for w in waiting()] == [reason], f"{reason} pod")
    assert image in waiting()[0]["message"]
    status = kubectl("rollout", "status", f"deployment/{name}", "-n", NS, "--timeout=20s")
    assert status.returncode != 0 and "exceeded its progress deadline" in status.stderr
    pod = next(
        p["metadata"]["name"]
        for p in get_json(kubectl, "pods", "-n", NS, "-l", f"app={name}")["items"]
        if p["spec"]["containers"][0]["image"] == image
    )
    events = kubectl.ok(
        "get", "events", "-n", NS, "--field-selector", f"involvedObject.name={pod},type=Warning"
    )
    assert "Failed" in events
    logs = kubectl("logs", pod, "-n", NS)
    assert logs.returncode != 0 and "is waiting to start" in logs.stderr
    ready = get_json(kubectl, "deployment", name, "-n", NS)["status"]
    assert ready["availableReplicas"] == 1 and ready.get("updatedReplicas") == 1


def test_image_marked_missing_by_fault(lab: ThreadedLab, kubectl: Kubectl) -> None:
    lab.call(lab.lab.set_fault("eu-dev-1", "image-missing", {"images": ["example.com/gone:1"]}))
    try:
        kubectl.ok("create", "deployment", "gone", "-n", NS, "--image=example.com/gone:1")

        def reasons() -> set[str]:
            pods = get_json(kubectl, "pods", "-n", NS, "-l", "app=gone")["items"]
            return {
                cs["state"].get("waiting", {}).get("reason", "running")
                for p in pods
                for cs in p["status"].get("containerStatuses", [])
            }

        eventually(lambda: reasons() == {"ImagePullBackOff"}, "ImagePullBackOff")
    finally:
        lab.call(lab.lab.clear_fault("eu-dev-1", "image-missing"))


def test_top_nodes_and_pods(kubectl: Kubectl) -> None:
    nodes = kubectl.ok("top", "nodes")
    assert nodes.split()[:5] == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert "eu-dev-1-cp-0" in nodes
    pods = kubectl.ok("top", "pods", "-n", "kube-system")
    assert "coredns" in pods and "kube-proxy" in pods


GADGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, description: How big the gadget is.}
"""


def test_explain_shows_builtin_and_crd_schemas(kubectl: Kubectl) -> None:
    out = kubectl.ok("explain", "deployment.spec.replicas")
    assert "KIND:       Deployment" in out and "<integer>" in out
    assert "Number of desired pods." in out
    out = kubectl.ok("explain", "pods.spec.containers")
    assert "image" in out and "<[]Container>" in out
    kubectl.ok("apply", "-f", "-", stdin=GADGET_CRD)
    eventually(
        lambda: "How big the gadget is." in kubectl("explain", "gadgets.spec.size").stdout,
        "the CRD's schema in kubectl explain",
    )


def test_create_generators_send_protobuf(kubectl: Kubectl) -> None:
    kubectl.ok(
        "create",
        "deployment",
        "proto",
        "-n",
        NS,
        "--image=nginx:1.27",
        "--replicas=3",
        "--port=80",
        "--",
        "nginx",
        "-g",
        "daemon off;",
    )
    d = get_json(kubectl, "deployment", "proto", "-n", NS)
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["selector"] == {"matchLabels": {"app": "proto"}}
    container = d["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.27" and container["ports"][0]["containerPort"] == 80
    assert container["command"] == ["nginx", "-g", "daemon off;"]
    kubectl.ok("create", "configmap", "proto", "-n", NS, "--from-literal=a=1")
    kubectl.ok("create", "secret", "generic", "proto", "-n", NS, "--from-literal=b=2")
    secret = get_json(kubectl, "secret", "proto", "-n", NS)
    assert base64.b64decode(secret["data"]["b"]) == b"2"
