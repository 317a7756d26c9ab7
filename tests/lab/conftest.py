"""A lab served from a background thread, shared by the lab API test modules.

The lab runs on its own event loop in a thread, so blocking clients (kubectl
subprocesses, the official Python client) can call it from the tests over real HTTPS.
Each test module works in its own namespace or cluster so modules do not interfere.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config

from lab.runtime import Lab

T = TypeVar("T")
KUBECTL = str(Path(sys.executable).parent / "kubectl")
CALL_TIMEOUT = 60.0


class ThreadedLab:
    """A started `Lab` on a private loop; `call` runs a coroutine there."""

    def __init__(self, directory: Path, **options: Any):
        self.loop = asyncio.new_event_loop()
        self.lab = Lab(directory=directory, **options)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.lab.start())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    def close(self) -> None:
        try:
            self.call(self.lab.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(CALL_TIMEOUT)
            self.loop.close()

    @property
    def kubeconfig(self) -> Path:
        return self.lab.kubeconfig

    def api_client(
        self, cluster: str = "eu-dev-1", *, token: str | None = None
    ) -> client.ApiClient:
        """An official-client ApiClient for `cluster`, as admin or with another `token`."""
        configuration = client.Configuration()
        config.load_kube_config(
            str(self.kubeconfig), context=f"lab-{cluster}", client_configuration=configuration
        )
        if token is not None:
            configuration.refresh_api_key_hook = None
            configuration.api_key = {"BearerToken": f"Bearer {token}"}
        return client.ApiClient(configuration)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedLab]:
    running = ThreadedLab(
        tmp_path_factory.mktemp("lab"), clusters=2, nodes=2, rollout_delay=0.1, upgrade_seconds=0.5
    )
    yield running
    running.close()


class Kubectl:
    """Runs the real kubectl binary against one lab context."""

    def __init__(self, kubeconfig: Path, context: str, cache: Path):
        self.base = [
            KUBECTL,
            "--kubeconfig",
            str(kubeconfig),
            "--context",
            context,
            "--cache-dir",
            str(cache),
        ]

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Runs and asserts exit code 0; returns stdout."""
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result.stdout


@pytest.fixture(scope="module")
def kubectl(lab: ThreadedLab, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(lab.kubeconfig, "lab-eu-dev-1", tmp_path_factory.mktemp("kubectl-cache"))
