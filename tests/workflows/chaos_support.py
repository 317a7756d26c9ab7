"""Parts the chaos test controls directly: a Temporal dev server it can stop and start
again (same port, same SQLite file), a succession of worker subprocesses it SIGKILLs, and
calls that ride out the server's restart. Every wait here has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from fleet import search
from tests.workflows.worker_process import spawn_worker, stop

T = TypeVar("T")

TEMPORAL = Path(sys.executable).parent / "temporal"
READY_TIMEOUT = 90.0  # seconds for the server (or a worker) to come up
STOP_TIMEOUT = 15.0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the test process dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stable_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999). The server's port must stay
    free while the server is down: a port from the ephemeral range can meanwhile become the
    local end of some outbound connection (workers and lab clients keep connecting), and
    the restarted server then fails to bind it."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    deadline: float = 120.0,
    attempt: float = 30.0,
    what: str = "call",
) -> T:
    """`call()`, retried on RPC errors and timeouts (the server restarting, a query
    reaching a killed worker's sticky queue) until `deadline` seconds have passed; each
    attempt may take `attempt` seconds."""
    until = time.monotonic() + deadline
    while True:
        try:
            return await asyncio.wait_for(call(), attempt)
        except (TimeoutError, RPCError) as exc:
            if time.monotonic() > until:
                raise AssertionError(f"{what} kept failing for {deadline:.0f}s: {exc}") from exc
        await asyncio.sleep(0.5)


async def until(
    probe: Callable[[], Awaitable[bool]], *, deadline: float, what: str, pause: float = 0.5
) -> None:
    """Polls `probe` (RPC failures count as "not yet") until it holds; fails after
    `deadline` seconds saying what was awaited."""
    limit = time.monotonic() + deadline
    while True:
        with contextlib.suppress(TimeoutError, RPCError):
            if await asyncio.wait_for(probe(), 30):
                return
        if time.monotonic() > limit:
            raise AssertionError(f"{what}: not reached within {deadline:.0f}s")
        await asyncio.sleep(pause)


@dataclass
class DevServer:
    """`temporal server start-dev` on a fixed port with a SQLite file, as a child process:
    `start`, `stop` (SIGTERM, then SIGKILL) and `start` again resume the same state."""

    directory: Path
    port: int = field(default_factory=stable_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(TEMPORAL),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--headless",
            "--db-filename",
            str(self.directory / "temporal.db"),
            "--log-level",
            "error",
            *search.server_flags(),
        ]

    async def start(self) -> Client:
        """Starts the server and returns a client once it answers (a fresh connection)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.process = await asyncio.to_thread(self._spawn, self.log)
        limit = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                text = self.log.read_text()
                raise AssertionError(
                    f"dev server exited with {self.process.returncode} while starting: "
                    + (text if len(text) <= 3000 else text[:2000] + "\n...\n" + text[-800:])
                )
            with contextlib.suppress(Exception):
                client = await asyncio.wait_for(self.connect(), 5)
                await asyncio.wait_for(client.count_workflows(), 5)
                return client
            if time.monotonic() > limit:
                raise AssertionError(f"dev server not ready within {READY_TIMEOUT:.0f}s")
            await asyncio.sleep(0.3)

    @property
    def log(self) -> Path:
        return self.directory / f"server-{self.starts}.log"

    def _spawn(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    async def connect(self) -> Client:
        return await Client.connect(self.address, data_converter=pydantic_data_converter)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Workers:
    """One worker subprocess at a time on `task_queue`; `kill` SIGKILLs the current one
    and `replace` starts the next (logs w1.log, w2.log, ... in `directory`)."""

    address_client: Client
    task_queue: str
    kubeconfig: str
    directory: Path
    current: subprocess.Popen[bytes] | None = None
    spawned: int = 0
    killed: int = 0
    died: list[int] = field(default_factory=list)  # exit codes of workers that died alone

    def log(self, n: int) -> Path:
        return self.directory / f"w{n}.log"

    async def replace(self) -> None:
        """Starts a new worker and waits until it logs that it is polling."""
        self.spawned += 1
        log = self.log(self.spawned)
        self.current = spawn_worker(
            self.address_client, self.task_queue, kubeconfig=self.kubeconfig, log=log
        )
        limit = time.monotonic() + READY_TIMEOUT
        while b"polling task queue" not in log.read_bytes():
            if self.current.poll() is not None:
                raise AssertionError(
                    f"worker {self.spawned} exited with {self.current.returncode} while "
                    f"starting: {log.read_text()[-2000:]}"
                )
            if time.monotonic() > limit:
                raise AssertionError(f"worker {self.spawned} not polling after {READY_TIMEOUT}s")
            await asyncio.sleep(0.2)

    async def kill(self) -> None:
        """SIGKILLs the current worker (no graceful shutdown) and starts a fresh one."""
        assert self.current is not None
        self.current.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.current.wait, STOP_TIMEOUT)
        self.killed += 1
        await self.replace()

    async def ensure_alive(self) -> None:
        """Replaces the current worker if it exited by itself (e.g. the server vanished)."""
        if self.current is not None and self.current.poll() is not None:
            self.died.append(self.current.returncode)
            await self.replace()

    def stop(self) -> None:
        if self.current is not None:
            stop(self.current)
