"""The real kubectl binary against the lab: output and exit codes as on a real cluster."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.lab.conftest import Kubectl, ThreadedLab

NS = "kubectl-test"

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  namespace: kubectl-test
  labels: {app: web}
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
        env: [{name: A, value: "1"}]
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""

WIDGET = """
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: kubectl-test}
spec: {size: 3}
"""


def deployment(replicas: int, name: str = "web", app: str = "web") -> str:
    text = DEPLOYMENT.replace("REPLICAS", str(replicas)).replace("NAME", name)
    return text.replace("{app: web}", f"{{app: {app}}}")


@pytest.fixture(scope="module", autouse=True)
def namespace(kubectl: Kubectl) -> None:
    kubectl.ok("create", "namespace", NS)


def header(output: str) -> list[str]:
    return output.splitlines()[0].split()


def test_version_reports_the_cluster_version(kubectl: Kubectl) -> None:
    info = json.loads(kubectl.ok("version", "-o", "json"))
    assert info["serverVersion"]["gitVersion"] == "v1.30.6"


def test_api_resources_lists_builtin_kinds(kubectl: Kubectl) -> None:
    out = kubectl.ok("api-resources")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "apps/v1" in lines["deployments"] and "deploy" in lines["deployments"]
    assert "Namespace" in lines["namespaces"]
    for name in (
        "pods",
        "networkpolicies",
        "clusterroles",
        "customresourcedefinitions",
        "selfsubjectaccessreviews",
    ):
        assert name in lines


def test_get_nodes_prints_status_roles_version(kubectl: Kubectl) -> None:
    out = kubectl.ok("get", "nodes")
    assert header(out) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows[0][:3] == ["eu-dev-1-cp-0", "Ready", "control-plane"]
    assert all(row[1] == "Ready" and row[-1] == "v1.30.6" for row in rows)


def test_get_pods_prints_ready_and_status(kubectl: Kubectl) -> None:
    out = kubectl.ok("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")
    assert header(out) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == 2 and all(r[1:3] == ["1/1", "Running"] for r in rows)


def test_describe_nodes_pods_and_deployments(kubectl: Kubectl) -> None:
    node = kubectl.ok("describe", "node", "eu-dev-1-cp-0")
    assert "Name:               eu-dev-1-cp-0" in node and "Kubelet Version:" in node
    pods = kubectl.ok("describe", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")
    assert "Status:" in pods and "Running" in pods
    deploy = kubectl.ok("describe", "deployment", "coredns", "-n", "kube-system")
    assert "Replicas:" in deploy and "2 desired" in deploy


def test_client_side_apply_creates_then_is_unchanged_then_configures(kubectl: Kubectl) -> None:
    assert "deployment.apps/web created" in kubectl.ok("apply", "-f", "-", stdin=deployment(2))
    assert "unchanged" in kubectl.ok("apply", "-f", "-", stdin=deployment(2))
    assert "configured" in kubectl.ok("apply", "-f", "-", stdin=deployment(3))
    out = kubectl.ok("rollout", "status", "deployment/web", "-n", NS, "--timeout=60s")
    assert 'deployment "web" successfully rolled out' in out
    out = kubectl.ok("get", "deployment", "web", "-n", NS)
    assert header(out) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert out.splitlines()[1].split()[:4] == ["web", "3/3", "3", "3"]


def test_patch_in_all_three_flavours(kubectl: Kubectl) -> None:
    kubectl.ok("apply", "-f", "-", stdin=deployment(1, "patchy"))
    kubectl.ok(
        "patch",
        "deployment",
        "patchy",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        '{"metadata":{"labels":{"merged":"yes"}}}',
    )
    kubectl.ok(
        "patch",
        "deployment",
        "patchy",
        "-n",
        NS,
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/metadata/labels/jsonpatched","value":"yes"}]',
    )
    kubectl.ok(
        "patch",
        "deployment",
        "patchy",
        "-n",
        NS,
        "--type",
        "strategic",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":'
        '[{"name":"B","value":"2"}]}]}}}}',
    )
    obj = json.loads(kubectl.ok("get", "deployment", "patchy", "-n", NS, "-o", "json"))
    assert obj["metadata"]["labels"]["merged"] == "yes"
    assert obj["metadata"]["labels"]["jsonpatched"] == "yes"
    env = obj["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]  # merged by name
    bad = kubectl(
        "patch",
        "deployment",
        "patchy",
        "-n",
        NS,
        "--type",
        "json",
        "-p",
        '[{"op":"remove","path":"/spec/nothing"}]',
    )
    assert bad.returncode == 1 and "invalid" in bad.stderr


def test_label_and_annotate(kubectl: Kubectl) -> None:
    kubectl.ok("create", "configmap", "labelled", "-n", NS, "--from-literal=a=b")
    assert "labeled" in kubectl.ok("label", "configmap", "labelled", "-n", NS, "tier=front")
    assert "annotated" in kubectl.ok("annotate", "configmap", "labelled", "-n", NS, "note=hi")
    out = kubectl.ok("get", "configmap", "-n", NS, "-l", "tier=front", "-o", "name")
    assert out.split() == ["configmap/labelled"]
    obj = json.loads(kubectl.ok("get", "configmap", "labelled", "-n", NS, "-o", "json"))
    assert obj["metadata"]["annotations"]["note"] == "hi"
    assert kubectl("label", "configmap", "labelled", "-n", NS, "bad=-x-").returncode != 0


def test_scale_set_image_restart_and_wait(kubectl: Kubectl) -> None:
    kubectl.ok("apply", "-f", "-", stdin=deployment(2, "roll"))
    assert "scaled" in kubectl.ok("scale", "deployment/roll", "-n", NS, "--replicas=1")
    assert "image updated" in kubectl.ok(
        "set", "image", "deployment/roll", "-n", NS, "web=nginx:1.28"
    )
    kubectl.ok("rollout", "status", "deployment/roll", "-n", NS, "--timeout=60s")
    assert "restarted" in kubectl.ok("rollout", "restart", "deployment/roll", "-n", NS)
    out = kubectl.ok(
        "wait", "--for=condition=Available", "deployment/roll", "-n", NS, "--timeout=60s"
    )
    assert "condition met" in out
    obj = json.loads(kubectl.ok("get", "deployment", "roll", "-n", NS, "-o", "json"))
    assert obj["spec"]["replicas"] == 1
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert "kubectl.kubernetes.io/restartedAt" in obj["spec"]["template"]["metadata"]["annotations"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_server_side_apply_owns_fields_and_reports_conflicts(kubectl: Kubectl) -> None:
    config = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ssa, namespace: {NS}}}\n"
    assert "serverside-applied" in kubectl.ok(
        "apply", "--server-side", "-f", "-", stdin=config + 'data: {a: "1", b: "2"}\n'
    )
    kubectl.ok("apply", "--server-side", "-f", "-", stdin=config + 'data: {a: "1"}\n')
    obj = json.loads(kubectl.ok("get", "configmap", "ssa", "-n", NS, "-o", "json"))
    assert obj["data"] == {"a": "1"}  # b was dropped from the manager's config: removed
    other = kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        "-",
        stdin=config + 'data: {a: "9"}\n',
    )
    assert other.returncode == 1 and 'conflict with "kubectl"' in other.stderr
    kubectl.ok(
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "-",
        stdin=config + 'data: {a: "9"}\n',
    )
    obj = json.loads(kubectl.ok("get", "configmap", "ssa", "-n", NS, "-o", "json"))
    assert obj["data"] == {"a": "9"}
    ssa = kubectl.ok("apply", "--server-side", "-f", "-", stdin=deployment(1, "ssa-web"))
    assert "deployment.apps/ssa-web serverside-applied" in ssa


def test_delete_removes_the_deployment_and_its_pods(kubectl: Kubectl) -> None:
    kubectl.ok("apply", "-f", "-", stdin=deployment(1, "doomed", "doomed"))
    kubectl.ok("rollout", "status", "deployment/doomed", "-n", NS, "--timeout=60s")
    assert 'deployment.apps "doomed" deleted' in kubectl.ok(
        "delete", "deployment", "doomed", "-n", NS
    )
    gone = kubectl("get", "deployment", "doomed", "-n", NS)
    assert gone.returncode == 1 and "NotFound" in gone.stderr
    assert kubectl.ok("get", "pods", "-n", NS, "-l", "app=doomed", "-o", "name") == ""


def test_get_watch_streams_changes_until_request_timeout(kubectl: Kubectl) -> None:
    kubectl.ok("create", "configmap", "watched-0", "-n", NS)
    watch = subprocess.Popen(
        [*kubectl.base, "get", "configmaps", "-n", NS, "-w", "--request-timeout=5s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()
        assert first.split()[:2] == ["NAME", "DATA"]
        kubectl.ok("create", "configmap", "watched-1", "-n", NS)
        out, _err = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert "watched-1" in out


def test_auth_can_i_for_admin_and_limited_user(lab: ThreadedLab, kubectl: Kubectl) -> None:
    assert kubectl.ok("auth", "can-i", "create", "deployments").strip() == "yes"
    token = lab.lab.add_user("eu-dev-1", "viewer", ["get", "list", "watch"])
    viewer = [f"--token={token}"]
    assert kubectl.ok(*viewer, "auth", "can-i", "list", "pods").strip() == "yes"
    denied = kubectl(*viewer, "auth", "can-i", "delete", "pods")
    assert denied.returncode == 1 and denied.stdout.strip() == "no"
    forbidden = kubectl(*viewer, "delete", "configmap", "labelled", "-n", NS)
    assert forbidden.returncode == 1 and "Forbidden" in forbidden.stderr


def test_wrong_token_is_rejected(kubectl: Kubectl) -> None:
    result = kubectl("--token=wrong", "get", "namespaces")
    assert result.returncode == 1
    assert "Unauthorized" in result.stderr or "must be logged in" in result.stderr


def test_invalid_name_is_a_readable_error(kubectl: Kubectl) -> None:
    result = kubectl("create", "configmap", "Not_Valid", "-n", NS)
    assert result.returncode == 1 and "is invalid" in result.stderr


def test_crd_and_custom_resource(kubectl: Kubectl) -> None:
    kubectl.ok("apply", "-f", "-", stdin=CRD)
    kubectl.ok("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=30s")
    assert "widget.example.com/w1 created" in kubectl.ok("apply", "-f", "-", stdin=WIDGET)
    assert "unchanged" in kubectl.ok("apply", "-f", "-", stdin=WIDGET)
    out = kubectl.ok("get", "wd", "-n", NS)
    assert header(out) == ["NAME", "SIZE", "AGE"] and out.splitlines()[1].split()[:2] == ["w1", "3"]
    kubectl.ok("patch", "widget", "w1", "-n", NS, "--type", "merge", "-p", '{"spec":{"size":5}}')
    assert json.loads(kubectl.ok("get", "wd", "w1", "-n", NS, "-o", "json"))["spec"]["size"] == 5
    assert "example.com/v1" in kubectl.ok("api-resources", "--api-group=example.com")
    kubectl.ok("delete", "widget", "w1", "-n", NS)
    assert "No resources found" in kubectl("get", "widgets", "-n", NS).stderr


def test_namespace_deletion_removes_its_content(kubectl: Kubectl) -> None:
    kubectl.ok("create", "namespace", "short-lived")
    kubectl.ok("create", "configmap", "inside", "-n", "short-lived")
    assert 'namespace "short-lived" deleted' in kubectl.ok("delete", "namespace", "short-lived")
    result = kubectl("get", "namespace", "short-lived")
    assert result.returncode == 1 and "NotFound" in result.stderr
