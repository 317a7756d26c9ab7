"""`python -m lab` as an operator uses it, and the LabProcess harness around it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import LabError, LabProcess

KUBECTL = str(Path(sys.executable).parent / "kubectl")


WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: nginx, image: "nginx:1.27"}]
"""


def lab_cli(*args: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args, "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def kubectl(
    kubeconfig: Path, context: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--context", context, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert text in result.stderr


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    with LabProcess(directory=tmp_path_factory.mktemp("lab-cli"), rollout_delay=0.05) as running:
        yield running


def test_up_serves_the_default_fleet_to_kubectl(lab: LabProcess) -> None:
    info = json.loads((lab.directory / "lab.json").read_text())
    assert [c["name"] for c in info["clusters"]] == [
        "eu-dev-1",
        "eu-staging-1",
        "us-staging-1",
        "eu-prod-1",
        "us-prod-1",
        "ap-prod-1",
    ]
    assert info["management_context"] == "lab-mgmt"
    assert oct(lab.kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert not any(secret in json.dumps(info) for secret in lab.secrets())
    nodes = kubectl(lab.kubeconfig, "lab-eu-prod-1", "get", "nodes")
    assert nodes.returncode == 0, nodes.stderr
    assert "eu-prod-1-cp-0" in nodes.stdout and "Ready" in nodes.stdout
    kcps = kubectl(lab.kubeconfig, "lab-mgmt", "get", "kubeadmcontrolplanes", "-n", "fleet")
    assert kcps.returncode == 0 and "eu-prod-1-control-plane" in kcps.stdout


def test_status_fault_and_clear(lab: LabProcess) -> None:
    status = lab_cli("status", directory=lab.directory)
    assert status.returncode == 0
    assert "eu-prod-1" in status.stdout and "env=prod" in status.stdout
    fault = lab_cli(
        "fault", "us-prod-1", "flaky", "--rate", "0.5", "--codes", "503", directory=lab.directory
    )
    assert fault.returncode == 0, fault.stderr
    assert "flaky" in fault.stdout
    listed = json.loads(lab_cli("status", "--json", directory=lab.directory).stdout)
    assert next(c for c in listed if c["name"] == "us-prod-1")["faults"] == {
        "flaky": {"rate": 0.5, "codes": [503]}
    }
    cleared = lab_cli("clear", "us-prod-1", "flaky", directory=lab.directory)
    assert cleared.returncode == 0 and "none" in cleared.stdout


def test_add_and_remove_a_cluster(lab: LabProcess) -> None:
    added = lab_cli(
        "add", "ap-dev-9", "--label", "env=dev", "--version", "v1.31.1", directory=lab.directory
    )
    assert added.returncode == 0, added.stderr
    version = kubectl(lab.kubeconfig, "lab-ap-dev-9", "get", "nodes", "-o", "name")
    assert version.returncode == 0 and "node/ap-dev-9-cp-0" in version.stdout
    md = kubectl(lab.kubeconfig, "lab-mgmt", "get", "md", "ap-dev-9-md-0", "-n", "fleet")
    assert md.returncode == 0, md.stderr
    removed = lab_cli("remove", "ap-dev-9", directory=lab.directory)
    assert removed.returncode == 0
    assert "ap-dev-9" not in [c["name"] for c in lab.admin.clusters()]


def test_mistakes_are_one_line_errors(lab: LabProcess, tmp_path: Path) -> None:
    assert_one_line_error(lab_cli("fault", "nope", "dark", directory=lab.directory), "nope")
    assert_one_line_error(
        lab_cli("fault", "eu-dev-1", "gremlins", directory=lab.directory), "unknown fault kind"
    )
    assert_one_line_error(
        lab_cli("add", "x", "--label", "novalue", directory=lab.directory), "KEY=VALUE"
    )
    assert_one_line_error(lab_cli("add", "eu-dev-1", directory=lab.directory), "already exists")
    assert_one_line_error(lab_cli("status", directory=tmp_path), "no lab running")
    assert_one_line_error(lab_cli("up", "--version", "1.30", directory=tmp_path), "vMAJOR")


def test_harness_surfaces_the_childs_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(LabError, match="cannot read lab state file"):
        LabProcess(clusters=1, directory=tmp_path, state_file=tmp_path / "state.json").start()


def test_sigterm_stops_cleanly_and_the_state_file_restores(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with LabProcess(clusters=1, directory=tmp_path, state_file=state) as first:
        server = first.info["clusters"][0]["server"]
        made = kubectl(first.kubeconfig, "lab-eu-dev-1", "create", "namespace", "kept")
        assert made.returncode == 0, made.stderr
        pid = first.info["pid"]
        os.kill(pid, signal.SIGTERM)
        assert first.process is not None and first.process.wait(30) == 0
    assert not (tmp_path / "lab.json").exists()
    assert state.exists() and oct(state.stat().st_mode & 0o777) == "0o600"
    with LabProcess(clusters=1, directory=tmp_path, state_file=state) as second:
        assert second.info["clusters"][0]["server"] == server
        got = kubectl(second.kubeconfig, "lab-eu-dev-1", "get", "namespace", "kept")
        assert got.returncode == 0, got.stderr
        assert second.info["pid"] != pid
        secrets = second.secrets()
        assert any(s.startswith("-----BEGIN") for s in secrets)  # the CA key, from state


def test_kubectl_rollouts_against_the_simulated_controllers(lab: LabProcess) -> None:
    def k(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(lab.kubeconfig, "lab-us-staging-1", *args, stdin=stdin)

    def ok(*args: str, stdin: str | None = None) -> str:
        result = k(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    ok("apply", "-f", "-", stdin=WEB)
    assert "successfully rolled out" in ok("rollout", "status", "deployment/web", "--timeout=60s")
    ok("rollout", "restart", "deployment/web")
    assert "successfully rolled out" in ok("rollout", "status", "deployment/web", "--timeout=60s")
    ok("rollout", "status", "daemonset/kube-proxy", "-n", "kube-system", "--timeout=60s")
    ok("patch", "deployment", "web", "-p", '{"spec":{"progressDeadlineSeconds":1}}')
    ok("set", "image", "deployment/web", "nginx=nginx:broken")
    stalled = k("rollout", "status", "deployment/web", "--timeout=60s")
    assert stalled.returncode != 0
    assert "exceeded its progress deadline" in stalled.stderr
    pods = ok("get", "pods", "-l", "app=web")
    assert "ImagePullBackOff" in pods


def test_image_missing_fault_stalls_a_daemonset_rollout(lab: LabProcess) -> None:
    def k(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl(lab.kubeconfig, "lab-ap-prod-1", "-n", "kube-system", *args)

    image = "registry.k8s.io/kube-proxy:v9.9.9"
    fault = lab_cli(
        "fault", "ap-prod-1", "image-missing", "--image", image, directory=lab.directory
    )
    assert fault.returncode == 0 and "image-missing" in fault.stdout, fault.stderr
    assert k("set", "image", "daemonset/kube-proxy", f"kube-proxy={image}").returncode == 0
    stalled = k("rollout", "status", "daemonset/kube-proxy", "--timeout=3s")
    assert stalled.returncode != 0
    pods = k("get", "pods", "-l", "k8s-app=kube-proxy")
    assert "ErrImagePull" in pods.stdout or "ImagePullBackOff" in pods.stdout
    assert lab_cli("clear", "ap-prod-1", "image-missing", directory=lab.directory).returncode == 0
