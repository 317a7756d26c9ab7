"""deploy/: the Prometheus rules and the Grafana dashboard parse (PromQL by a real PromQL
parser, promtool too when it is installed) and name only metrics Flotilla exposes; the
Kubernetes manifests render with kustomize (kubectl's) and the lab's management cluster
accepts them with `kubectl apply --dry-run=server` (and refuses a broken one)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

from activities.metrics import FLEET
from starters import telemetry

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
# Metrics exported through the Temporal SDK that the rules and dashboard use
# (tests/ops/test_metrics.py checks the worker serves them), and Prometheus's own `up`.
SDK_METRICS = {
    "flotilla_cluster_duration_seconds_bucket",  # the engine's, through the SDK's meter
    "temporal_workflow_task_schedule_to_start_latency_seconds_bucket",
    "temporal_worker_task_slots_used",
    "up",
}
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def exposed() -> set[str]:
    """Every sample name this code base exposes (prometheus_client's registry, including
    counters' `_total` and histograms' `_bucket/_sum/_count`), plus the fleet gauges."""
    assert telemetry.API_REQUESTS  # its metrics are registered on import
    names = set(REGISTRY._names_to_collectors)  # sample names -> collectors
    names |= {family.name for family in FLEET.collect()}
    return names | SDK_METRICS


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_alert_rules_are_valid_and_use_real_metrics() -> None:
    path = DEPLOY / "prometheus" / "flotilla-rules.yaml"
    document = yaml.safe_load(path.read_text())
    assert set(document) == {"groups"}
    known = exposed()
    groups = [g["name"] for g in document["groups"]]
    assert len(groups) == len(set(groups)), "group names must be unique"
    alerts = 0
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert NAME.match(rule.get("alert") or rule["record"])
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, f"{rule.get('alert')}: no such metrics {unknown}"
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            for text in [*rule.get("labels", {}).values(), *rule.get("annotations", {}).values()]:
                assert isinstance(text, str) and text.count("{{") == text.count("}}"), text
            alerts += 1
    assert alerts >= 10
    promtool = shutil.which("promtool")
    if promtool:  # the reference checker, where it is installed
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse_and_use_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "flotilla-dashboard.json").read_text())
    known = exposed()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            unknown = metric_names(expr) - known
            assert not unknown, f"{panel['title']}: no such metrics {unknown}"


def kubectl(*args: str, kubeconfig: Path, context: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--context", context, *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_manifests_render_with_probes_resources_and_secret_references() -> None:
    objects = rendered()
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert kinds == [
        "ConfigMap/flotilla-config",
        "Deployment/flotilla-api",
        "Deployment/flotilla-worker",
        "Service/flotilla-api",
        "Service/flotilla-worker-metrics",
        "ServiceAccount/flotilla",
    ]
    assert {o["metadata"]["namespace"] for o in objects} == {"flotilla"}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "flotilla"
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        assert container["image"] == "flotilla:0.1.0"
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    worker = deployments["flotilla-worker"]
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kubeconfigs"]["secret"]["secretName"] == "flotilla-kubeconfigs"
    api = deployments["flotilla-api"]
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLOTILLA_WEBHOOK_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "flotilla-api"
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["FLOTILLA_METRICS_ADDRESS"] == "0.0.0.0:9464"
    assert not any("token" in v.lower() or "password" in v.lower() for v in config.values())


def test_management_cluster_accepts_the_manifests_in_a_server_dry_run(lab: Any) -> None:
    kubeconfig, context = Path(lab.kubeconfig), lab.info["management_context"]
    namespaces = kubectl("get", "namespaces", "-o", "name", kubeconfig=kubeconfig, context=context)
    if "namespace/flotilla" not in namespaces.split():
        kubectl("create", "namespace", "flotilla", kubeconfig=kubeconfig, context=context)
    out = kubectl(
        "apply", "--dry-run=server", "-k", str(BASE), kubeconfig=kubeconfig, context=context
    )
    for name in (
        "serviceaccount/flotilla",
        "configmap/flotilla-config",
        "service/flotilla-api",
        "service/flotilla-worker-metrics",
        "deployment.apps/flotilla-api",
        "deployment.apps/flotilla-worker",
    ):
        assert f"{name} created (server dry run)" in out, out
    left = kubectl(
        "get", "deployments,services,configmaps,serviceaccounts", "-n", "flotilla",
        "-o", "name", kubeconfig=kubeconfig, context=context,
    )  # fmt: skip
    assert "flotilla-worker" not in left and "flotilla-config" not in left  # a dry run
    # The server validates: a Deployment whose selector misses its pods is refused.
    objects = rendered()
    worker = next(o for o in objects if o["metadata"]["name"] == "flotilla-worker")
    worker["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "other"
    with pytest.raises(AssertionError, match="selector does not match template labels"):
        kubectl(
            "apply", "--dry-run=server", "-f", "-",
            kubeconfig=kubeconfig, context=context, stdin=yaml.safe_dump(worker),
        )  # fmt: skip
    # ... and so is a mount of a volume the pod does not declare, or a probe with no handler.
    api = next(o for o in objects if o["kind"] == "Deployment" and o is not worker)
    container = api["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"][0]["name"] = "temp"
    container["livenessProbe"] = {"periodSeconds": 5}
    with pytest.raises(AssertionError) as refused:
        kubectl(
            "apply", "--dry-run=server", "-f", "-",
            kubeconfig=kubeconfig, context=context, stdin=yaml.safe_dump(api),
        )  # fmt: skip
    assert 'volumeMounts[0].name: Not found: "temp"' in str(refused.value)
    assert "livenessProbe: Required value: must specify a handler type" in str(refused.value)
