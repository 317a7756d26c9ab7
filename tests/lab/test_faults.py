"""Each fault as a client sees it, and clearing restores service.

The lab runs as a real subprocess (`LabProcess`), faults go through its admin API, and
the clients are the official Python client and kubectl over HTTPS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab.testing import LabError, LabProcess

KUBECTL = str(Path(sys.executable).parent / "kubectl")
C = "eu-dev-1"
GROUP, VERSION = "controlplane.cluster.x-k8s.io", "v1beta1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    with LabProcess(
        clusters=2,
        directory=tmp_path_factory.mktemp("lab-faults"),
        nodes=3,
        rollout_delay=0.05,
        upgrade_seconds=0.2,
    ) as running:
        yield running


def api(lab: LabProcess, cluster: str = C) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(
        str(lab.kubeconfig), context=lab.contexts[cluster], client_configuration=configuration
    )
    configuration.retries = False  # see each failure as it happens
    return client.ApiClient(configuration)


def kubectl(lab: LabProcess, *args: str, cluster: str = C) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(lab.kubeconfig), "--context", lab.contexts[cluster], *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never true: {predicate}"
        time.sleep(0.05)


def namespaces_ok(lab: LabProcess) -> bool:
    with api(lab) as c:
        return bool(client.CoreV1Api(c).list_namespace(_request_timeout=(5, 30)).items)


def test_dark_refuse_refuses_connections_until_cleared(lab: LabProcess) -> None:
    lab.admin.fault(C, "dark", mode="refuse")
    with pytest.raises(urllib3.exceptions.NewConnectionError, match="refused"), api(lab) as c:
        client.CoreV1Api(c).list_namespace()
    result = kubectl(lab, "get", "ns", "--request-timeout=5s")
    assert result.returncode != 0 and "connection refused" in result.stderr
    assert kubectl(lab, "get", "ns", cluster="eu-staging-1").returncode == 0
    lab.admin.clear(C, "dark")
    assert namespaces_ok(lab)
    assert kubectl(lab, "get", "ns").returncode == 0


def test_dark_hang_accepts_but_never_answers(lab: LabProcess) -> None:
    lab.admin.fault(C, "dark", mode="hang")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError), api(lab) as c:
        client.CoreV1Api(c).list_namespace(_request_timeout=(5, 0.5))
    result = kubectl(lab, "get", "ns", "--request-timeout=1s")
    assert result.returncode != 0
    lab.admin.clear(C)
    assert namespaces_ok(lab)


def test_slow_delays_answers_until_cleared(lab: LabProcess) -> None:
    lab.admin.fault(C, "slow", latency_ms=5000)
    # A deadline far below the injected latency fails; service itself continues.
    with pytest.raises(urllib3.exceptions.ReadTimeoutError), api(lab) as c:
        client.CoreV1Api(c).list_namespace(_request_timeout=(5, 0.3))
    lab.admin.clear(C, "slow")
    assert namespaces_ok(lab)


@pytest.mark.parametrize("code", [500, 503, 429])
def test_flaky_fails_requests_with_the_chosen_codes(lab: LabProcess, code: int) -> None:
    lab.admin.fault(C, "flaky", rate=1.0, codes=[code])
    with pytest.raises(ApiException) as failed, api(lab) as c:
        client.CoreV1Api(c).list_namespace()
    assert failed.value.status == code
    if code == 429:
        assert (
            failed.value.headers and failed.value.headers["Retry-After"]
        )  # kubectl would honour it and retry
    else:
        result = kubectl(lab, "get", "ns", "--request-timeout=20s")
        assert result.returncode != 0
    lab.admin.clear(C, "flaky")
    assert namespaces_ok(lab)


def node_states(lab: LabProcess) -> dict[str, str]:
    with api(lab) as c:
        nodes = c.sanitize_for_serialization(client.CoreV1Api(c).list_node())["items"]
    return {
        n["metadata"]["name"]: next(
            cond["status"] for cond in n["status"]["conditions"] if cond["type"] == "Ready"
        )
        for n in nodes
    }


def test_nodes_not_ready_as_the_client_sees_it(lab: LabProcess) -> None:
    lab.admin.fault(C, "nodes-not-ready", count=1)
    assert node_states(lab) == {
        f"{C}-cp-0": "True",
        f"{C}-md-0-0": "Unknown",
        f"{C}-md-0-1": "True",
    }
    table = kubectl(lab, "get", "nodes").stdout
    assert f"{C}-md-0-0" in table
    lab.admin.clear(C, "nodes-not-ready")
    assert set(node_states(lab).values()) == {"True"}


def kcp(lab: LabProcess) -> dict[str, Any]:
    with api(lab, "mgmt") as c:
        found = client.CustomObjectsApi(c).get_namespaced_custom_object(
            GROUP, VERSION, "fleet", "kubeadmcontrolplanes", f"{C}-control-plane"
        )
    assert isinstance(found, dict)
    return found


def server_version(lab: LabProcess) -> str:
    with api(lab) as c:
        return str(client.VersionApi(c).get_code().git_version)


def test_upgrade_fail_stops_the_upgrade_until_cleared(lab: LabProcess) -> None:
    lab.admin.fault(C, "upgrade-fail")
    with api(lab, "mgmt") as c:
        client.CustomObjectsApi(c).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "fleet",
            "kubeadmcontrolplanes",
            f"{C}-control-plane",
            {"spec": {"version": "v1.31.0"}},
        )

    def ready() -> dict[str, Any]:
        return next(x for x in kcp(lab)["status"]["conditions"] if x["type"] == "Ready")

    wait_for(lambda: ready().get("severity") == "Error")
    assert ready()["status"] == "False" and ready()["reason"]
    assert server_version(lab) == "v1.30.6"
    lab.admin.clear(C, "upgrade-fail")
    wait_for(lambda: kcp(lab)["status"]["version"] == "v1.31.0")
    assert ready()["status"] == "True"
    assert server_version(lab) == "v1.31.0"


def test_admission_refusal_reaches_the_client(lab: LabProcess) -> None:
    with pytest.raises(ApiException) as refused, api(lab, "mgmt") as c:
        client.CustomObjectsApi(c).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "fleet",
            "kubeadmcontrolplanes",
            "eu-staging-1-control-plane",
            {"spec": {"version": "v1.32.0"}},
        )
    assert refused.value.status == 422
    message = json.loads(refused.value.body or "{}")["message"]
    assert message.startswith('admission webhook "validation.kubeadmcontrolplane')


def test_faults_on_unknown_clusters_and_kinds_are_refused(lab: LabProcess) -> None:
    with pytest.raises(LabError, match="no cluster named"):
        lab.admin.fault("nope", "dark")
    with pytest.raises(LabError, match="unknown fault kind"):
        lab.admin.fault(C, "gremlins")
    with pytest.raises(LabError, match="count"):
        lab.admin.fault(C, "nodes-not-ready", count=99)
    assert all(not c["faults"] for c in lab.admin.clusters())
