"""`flotilla up` in a subprocess: starts its components on ephemeral ports, serves the CLI,
and on SIGINT stops every process it started."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.starters.conftest import FLOTILLA, TEMPORAL, Run, assert_one_line_error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Up:
    process: subprocess.Popen[str]
    address: str
    state_dir: Path
    output: list[str]

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=90)


def start_up(env: dict[str, str], *flags: str) -> Up:
    """Starts `flotilla up` and reads its output until it says it is up."""
    port = free_port()
    process = subprocess.Popen(
        [FLOTILLA, "up", "--port", str(port), "--ui-port", str(free_port()), *flags],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = []
    for line in process.stdout:  # ends if the process exits
        output.append(line)
        if "flotilla is up" in line:
            return Up(process, f"127.0.0.1:{port}", Path(env["FLOTILLA_STATE_DIR"]), output)
    process.wait()
    raise AssertionError(f"flotilla up exited with {process.returncode}: {''.join(output)}")


def assert_all_gone(processes: list[psutil.Process]) -> None:
    for p in processes:
        alive = p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        assert not alive, f"orphan left running: {p.pid} {p.cmdline()}"


def test_up_temporal_only_starts_and_stops_cleanly(cli_env: dict[str, str], flotilla: Run) -> None:
    up = start_up(cli_env, "--no-lab", "--no-worker")
    try:
        children = up.children()
        assert children, "no Temporal server process"
        listed = flotilla("ops", "list", "-o", "json", address=up.address)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        schedule = subprocess.run(
            [
                TEMPORAL,
                "schedule",
                "describe",
                "--address",
                up.address,
                "-s",
                "flotilla-health-sweep",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert schedule.returncode == 0, schedule.stderr
        assert "FleetHealthSweep" in schedule.stdout
    finally:
        code = up.stop()
    assert code == 0, "".join(up.output)
    assert_all_gone(children)
    assert (up.state_dir / "temporal.db").exists()


def test_up_refuses_a_port_in_use(flotilla: Run) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = flotilla("up", "--port", str(port), "--no-lab", "--no-worker")
    assert f"port {port} is already in use" in assert_one_line_error(result, 1)


def test_up_kubeconfig_needs_no_lab(flotilla: Run, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    result = flotilla("up", "--kubeconfig", str(kubeconfig))
    assert "--no-lab" in assert_one_line_error(result, 2)


@pytest.mark.slow
def test_up_full_stack_onboard_and_list(cli_env: dict[str, str], flotilla: Run) -> None:
    """Temporal + lab + worker; onboard the lab in bulk through the CLI, list, stop."""
    up = start_up(cli_env, "--clusters", "2")
    try:
        children = up.children()
        lab_dir = up.state_dir / "lab"
        info = json.loads((lab_dir / "lab.json").read_text())
        names = sorted(c["name"] for c in info["clusters"])
        onboard = flotilla(
            "clusters",
            "onboard",
            "--all-contexts",
            "--kubeconfig",
            info["kubeconfig"],
            "--capi-context",
            info["management_context"],
            "--capi-namespace",
            "fleet",
            "--strip-prefix",
            "lab-",
            "--labels-from",
            str(lab_dir / "lab.json"),
            address=up.address,
        )
        assert onboard.returncode == 0, onboard.stdout + onboard.stderr
        listed = flotilla("clusters", "list", "-o", "json", address=up.address)
        assert listed.returncode == 0, listed.stderr
        records = json.loads(listed.stdout)
        assert [r["name"] for r in records] == names
        assert all(r["labels"]["env"] and r["phase"] == "active" for r in records)
        selected = flotilla("clusters", "list", "-l", "env=dev", "-o", "json", address=up.address)
        assert [r["name"] for r in json.loads(selected.stdout)] == ["eu-dev-1"]
        shown = flotilla("clusters", "show", "eu-dev-1", address=up.address)
        assert shown.returncode == 0 and "eu-dev-1" in shown.stdout
        missing = flotilla("clusters", "show", "nope-1", address=up.address)
        assert "unknown cluster 'nope-1'" in assert_one_line_error(missing, 1)
        status = flotilla("lab", "status", "--json")  # pass-through, stack's lab dir
        assert status.returncode == 0, status.stderr
        assert all(n in status.stdout for n in names)
        ops_list = flotilla("ops", "list", "--kind", "onboard", "-o", "json", address=up.address)
        assert {o["id"] for o in json.loads(ops_list.stdout)} >= {f"onboard:{n}" for n in names}
    finally:
        code = up.stop()
    assert code == 0, "".join(up.output)
    assert_all_gone(children)


@pytest.mark.slow
def test_demo_exits_when_done(cli_env: dict[str, str], flotilla: Run) -> None:
    """`flotilla demo --exit`: onboard, sweep, canary rollout, fleet table, clean stop."""
    args = ["demo", "--exit", "--clusters", "3", "--port", str(free_port())]
    result = flotilla(*args, "--ui-port", str(free_port()), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("onboarded", "checked 3", "rollout:addon:demo-", "succeeded", "3 cluster(s)"):
        assert step in result.stdout, step
    state_dir = cli_env["FLOTILLA_STATE_DIR"]
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if any(state_dir in part for part in p.info["cmdline"] or [])
    ]
    assert not leftovers
