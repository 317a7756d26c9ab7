"""Every mistake a person can make prints one readable line and exits 2 (usage) or 1."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from temporalio.service import RPCError

from fleet.models import LockRelease, LockRequest, RecordsQuery
from starters.inventory import list_clusters
from tests.conftest import RunningWorker
from tests.starters.conftest import ARun, Run, assert_one_line_error
from tests.starters.sample_ops import SampleInput

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: a, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: a, user: {token: not-a-secret}}]
contexts: [{name: ctx-a, context: {cluster: a, user: a}}]
current-context: ctx-a
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["clusters", "list", "-l", "env in (eu"], "bad label selector"),
        (["clusters", "list", "-l", "env=prod,,x"], "bad label selector"),
        (["clusters", "onboard", "c1", "--context", "ctx-a", "-l", "team"], "invalid label"),
        (["clusters", "onboard", "c1", "--context", "ctx-a", "-l", "a b=c"], "invalid label"),
        (["clusters", "onboard", "c1", "--context", "nope"], "no context 'nope'"),
        (["clusters", "onboard", "c1", "--context", "ctx-a", "--capi-context", "x"], "no context"),
        (["clusters", "onboard", "c1"], "missing --context"),
        (["clusters", "onboard", "--all-contexts", "--exclude", "nope"], "no context 'nope'"),
        (["clusters", "onboard", "--all-contexts", "--exclude", "ctx-a"], "no contexts left"),
        (["clusters", "list", "-o", "yaml"], "'yaml' is not one of"),
        (["ops", "list", "--kind", "rm -rf"], "unknown operation kind"),
        (["ops", "lsit"], "No such command"),
        (["clusters", "show"], "Missing argument"),
        (["up", "--port", "0"], "--port"),
    ],
)
def test_usage_errors(flotilla: Run, kubeconfig: Path, args: list[str], expected: str) -> None:
    result = flotilla(*args, env={"FLOTILLA_KUBECONFIG": str(kubeconfig)})
    assert expected in assert_one_line_error(result, 2)


def test_bad_kubeconfig_path(flotilla: Run, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = flotilla("clusters", "onboard", "c1", "--context", "x", "--kubeconfig", str(missing))
    assert f"{missing} does not exist" in assert_one_line_error(result, 2)


def test_kubeconfig_not_yaml(flotilla: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("{{{ not yaml")
    result = flotilla("clusters", "onboard", "c1", "--context", "x", "--kubeconfig", str(bad))
    assert "cannot read" in assert_one_line_error(result, 2)


@pytest.mark.parametrize(
    "args", [["clusters", "list"], ["ops", "list"], ["ops", "show", "x"], ["clusters", "show", "x"]]
)
def test_temporal_unreachable(flotilla: Run, args: list[str]) -> None:
    address = f"127.0.0.1:{closed_port()}"
    line = assert_one_line_error(flotilla(*args, address=address), 1)
    assert f"cannot reach Temporal at {address}" in line


@pytest.mark.parametrize("where", ["before", "after", "equals"])
def test_address_flag_overrides_environment(flotilla: Run, where: str) -> None:
    address = f"127.0.0.1:{closed_port()}"
    args = {
        "before": ["--address", address, "ops", "list"],
        "after": ["ops", "list", "--address", address],
        "equals": ["ops", "list", f"--address={address}"],
    }[where]
    result = flotilla(*args, address="127.0.0.1:7")
    assert address in assert_one_line_error(result, 1)


def test_no_arguments_prints_help(flotilla: Run) -> None:
    result = flotilla()
    assert result.returncode == 0
    assert "clusters" in result.stdout and "ops" in result.stdout


def test_workflow_not_found(flotilla: Run, temporal_address: str) -> None:
    result = flotilla("ops", "show", "rollout:k8s:does-not-exist", address=temporal_address)
    assert "no operation with workflow id" in assert_one_line_error(result, 1)
    result = flotilla("ops", "watch", "nope", address=temporal_address)
    assert "no operation with workflow id" in assert_one_line_error(result, 1)


def test_unknown_cluster(flotilla: Run, temporal_address: str) -> None:
    for args in (["clusters", "show", "nope-1"], ["clusters", "offboard", "nope-1"]):
        result = flotilla(*args, address=temporal_address)
        assert "unknown cluster 'nope-1'" in assert_one_line_error(result, 1)


async def test_lock_held(
    aflotilla: ARun, onboarded_fleet: dict[str, object], worker: RunningWorker
) -> None:
    """Offboarding a cluster another live operation holds fails in one line naming the
    holder (and leaves the shared fleet as it was)."""
    client = worker.client
    records = await list_clusters(client, RecordsQuery())
    name = sorted(r.name for r in records if r.lock is None)[-1]
    # The holder must be a running workflow: the entity breaks locks of vanished holders.
    holder = await client.start_workflow(
        "SampleOperation",
        SampleInput(clusters=[name]),
        id=f"test:lock-holder-{uuid.uuid4().hex[:6]}",
        task_queue=f"no-worker-{uuid.uuid4().hex[:6]}",
    )
    entity = client.get_workflow_handle(f"cluster:{name}")
    await entity.execute_update(
        "acquire_lock", LockRequest(cluster=name, holder=holder.id, operation="test")
    )
    try:
        result = await aflotilla(
            "clusters", "offboard", name,
            address=client.service_client.config.target_host,
            env={"FLOTILLA_TASK_QUEUE": worker.task_queue},
        )  # fmt: skip
        line = assert_one_line_error(result, 1)
        assert "ClusterLocked" in line and holder.id in line
    finally:
        await entity.execute_update("release_lock", LockRelease(cluster=name, holder=holder.id))
        await holder.terminate("test done")


async def test_addon_start_refuses_an_unknown_addon_and_starts_nothing(
    aflotilla: ARun, onboarded_fleet: dict[str, object], worker: RunningWorker
) -> None:
    """`addon start` checks the plan live before starting; `--namespace` after the subcommand
    is the add-on's Kubernetes namespace, not the Temporal namespace."""
    client = worker.client
    rollout_id = f"nosuch-{uuid.uuid4().hex[:6]}"
    result = await aflotilla(
        "addon", "start", "--name", "nosuch", "--namespace", "kube-system",
        "--image", "example.com/nosuch:1", "--id", rollout_id,
        address=client.service_client.config.target_host,
        env={"FLOTILLA_TASK_QUEUE": worker.task_queue},
    )  # fmt: skip
    line = assert_one_line_error(result, 1)
    assert "unknown add-on: deployment kube-system/nosuch not found" in line
    with pytest.raises(RPCError):  # no run was started under the rollout's id
        await client.get_workflow_handle(f"rollout:addon:{rollout_id}").describe()
