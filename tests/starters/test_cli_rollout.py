"""`flotilla upgrade|addon plan|start` and `flotilla ops pause|...`: plans print per wave;
every mistake prints one line and exits 2 (usage) or 1 (refused/failed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.starters.conftest import Run, assert_one_line_error
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    make_fleet,
)

# The CLI with the rollout commands mounted (as starters.cli does once it calls `mount`).
ENTRY = (
    "import sys; from starters import cli, cli_rollout\n"
    "if not any(g.name == 'upgrade' for g in cli.app.registered_groups):\n"
    "    cli_rollout.mount(cli.app, cli.ops_app)\n"
    "cli.main(sys.argv[1:])"
)


@pytest.fixture
def rollout_cli(cli_env: dict[str, str]) -> Run:
    def run(*args: str, address: str = "") -> subprocess.CompletedProcess[str]:
        env = {**cli_env, **({"TEMPORAL_ADDRESS": address} if address else {})}
        return subprocess.run(
            [sys.executable, "-c", ENTRY, *args],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    return run


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["upgrade", "plan", "--to", "v1.31"], "not a Kubernetes version"),
        (["upgrade", "start", "--to", "v1.31.2", "--soak", "forever"], "bad duration"),
        (["addon", "plan", "--name", "x", "--image", "y", "--kind", "job"], "--kind: "),
        (["upgrade", "start", "--to", "v1.31.2", "--max-concurrent", "0"], "--max-concurrent: "),
        (["upgrade", "start", "--to", "v1.31.2", "--id", "bad id/with slash"], "--id: "),
        (["upgrade", "start", "--to", "v1.31.2", "--cluster-timeout", "0"], "--cluster-timeout: "),
        (["upgrade", "start", "--to", "v1.31.2", "--soak", "99999999999h"], "--soak: "),
        (["upgrade", "plan", "--to", "v1.31.2", "-l", "env in (a"], "--selector: "),
        (["upgrade", "start", "--to", "v1.31.2", "-l", "env in (a"], "--selector: "),
        (["upgrade", "plan", "--to", "v1.31.2", "--waves", "a:1,a:2"], "two waves are named"),
        (["upgrade", "plan", "--to", "v1.31.2", "--waves", ","], "no waves given"),
        (["addon", "start", "--name", "x", "--image", "NOT AN IMAGE"], "not a valid image"),
        (["upgrade", "start", "--to", "v1.31.2", "--failure-budget", "lots"], "failure budget"),
        (["upgrade", "start", "--to", "v1.31.2", "--window", "whenever"], "--window: "),
        (["upgrade", "plan"], "Missing option '--to'"),
        (["addon", "plan", "--name", "", "--image", "nginx:1"], "--name: "),
    ],
)
def test_usage_errors(rollout_cli: Run, args: list[str], expected: str) -> None:
    """Refused before anything connects: one line, exit 2, no Python names."""
    line = assert_one_line_error(rollout_cli(*args), 2)
    assert expected in line
    assert "Error" not in line and "pydantic" not in line and "type=" not in line


async def test_plan_prints_waves_and_refusals_are_one_line(
    rollout_cli: Run, engine: Engine, temporal_address: str
) -> None:
    selector = await make_fleet(engine, [{}, {}, {}])
    suite = selector.split("=")[1]
    args = ["upgrade", "plan", "--to", "v1.31.2", "-l", selector, "--waves", "canary:1,rest"]
    result = await _run(rollout_cli, *args, "--no-check", address=temporal_address)
    assert result.returncode == 0, result.stderr
    assert "canary" in result.stdout and f"{suite}-00" in result.stdout
    refused = await _run(
        rollout_cli,
        "upgrade",
        "plan",
        "--to",
        "v1.31.2",
        "-l",
        "suite=none",
        "--no-check",
        address=temporal_address,
    )
    assert "plan refused: no clusters matching" in assert_one_line_error(refused, 1)
    unknown = await _run(rollout_cli, "ops", "pause", "k8s:nope", address=temporal_address)
    assert_one_line_error(unknown, 1)


async def _run(run: Run, *args: str, address: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(run, *args, address=address)
