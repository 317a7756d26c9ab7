"""Fixtures for CLI tests: run the real `flotilla` console script in a subprocess, with an
environment cleared of the developer's TEMPORAL_*/FLOTILLA_* settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

FLOTILLA = str(Path(sys.executable).parent / "flotilla")
TEMPORAL = str(Path(sys.executable).parent / "temporal")

Run = Callable[..., subprocess.CompletedProcess[str]]
ARun = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "FLOTILLA_"))}
    env.update(
        FLOTILLA_STATE_DIR=str(tmp_path / "state"),
        NO_COLOR="1",
        COLUMNS="200",
        KUBECONFIG=str(tmp_path / "no-kubeconfig"),
    )
    return env


@pytest.fixture
def flotilla(cli_env: dict[str, str]) -> Run:
    """`flotilla(*args, address=..., env={...})` runs the CLI and returns the result."""

    def run(
        *args: str, address: str = "", env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**cli_env, **(env or {})}
        if address:
            full_env["TEMPORAL_ADDRESS"] = address
        return subprocess.run(
            [FLOTILLA, *args],
            env=full_env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    return run


@pytest.fixture
def aflotilla(flotilla: Run) -> Callable[..., Awaitable[subprocess.CompletedProcess[str]]]:
    """The same, awaitable: async tests must not block the loop their workers run on."""

    async def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(flotilla, *args, **kwargs)

    return run


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The CLI failed with `code`, one `flotilla: ...` line on stderr, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flotilla: "), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]
