"""`flotilla up`: the local stack in the foreground.

Starts, in order, a Temporal dev server (SQLite under the state dir, Flotilla's search
attributes registered), the lab (`python -m lab up`), and the worker (`python -m worker`
pointed at the lab's kubeconfig); waits until each one is ready; ensures the health-sweep
schedule. Ctrl-C or SIGTERM stops them in reverse order, waiting for each. Every child
runs in its own session, so a terminal Ctrl-C reaches only this process, which then stops
them in order; on Linux each child also gets SIGTERM if this process dies without cleaning
up, so nothing is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from fleet import search
from fleet.config import Settings
from fleet.connect import connect
from fleet.store import DATABASE_ENV, database_url
from starters.errors import CliError
from starters.schedules import ensure_health_schedule

READY_TIMEOUT = 90.0  # seconds for any one component to become ready
STOP_TIMEOUT = 15.0  # seconds a component gets to stop before it is killed


@dataclass
class StackOptions:
    state_dir: Path
    temporal: bool = True  # False: use `temporal_address` (or the env config)
    temporal_address: str = ""
    namespace: str = "default"
    port: int = 7233
    ui_port: int = 8233
    lab: bool = True  # False: use `kubeconfig` (or the worker's default)
    kubeconfig: str = ""
    clusters: int = 6
    worker: bool = True
    task_queue: str = "flotilla"
    health_interval: int = 300


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM


@dataclass
class Stack:
    """The local stack: `start()` brings the components up in order, `stop()` (always
    call it, also after a failed start) stops whatever was started, newest first."""

    options: StackOptions
    console: Console = field(default_factory=lambda: Console(stderr=True))
    address: str = ""
    kubeconfig: str = ""
    lab_info: dict[str, Any] = field(default_factory=dict)
    client: Client | None = None
    components: list[Component] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.options.state_dir / "logs"

    @property
    def ui_url(self) -> str:
        if not self.options.temporal:
            return ""
        return f"http://localhost:{self.options.ui_port}/namespaces/{self.options.namespace}"

    async def start(self) -> None:
        o = self.options
        self.logs.mkdir(parents=True, exist_ok=True)
        if o.temporal:
            await self._start_temporal()
        else:
            self.address = o.temporal_address
            self.client = await self._connect()
            self.address = self.client.service_client.config.target_host
        if o.lab:
            await self._start_lab()
        else:
            self.kubeconfig = o.kubeconfig
        if o.worker:
            await self._start_worker()
        assert self.client is not None
        await ensure_health_schedule(
            self.client, interval_seconds=o.health_interval, task_queue=o.task_queue
        )

    async def stop(self) -> None:
        while self.components:
            component = self.components.pop()
            await asyncio.to_thread(_stop_process, component)
            self.console.print(f"[dim]stopped {component.name}[/dim]")

    async def _connect(self) -> Client:
        try:
            return await connect(self.address or None, self.options.namespace)
        except Exception as exc:
            where = self.address or "the configured address"
            raise CliError(f"cannot reach Temporal at {where}: {exc}") from None

    async def _start_temporal(self) -> None:
        o = self.options
        for port in (o.port, o.ui_port):
            _require_free_port(port)
        self.address = f"127.0.0.1:{o.port}"
        o.state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            _venv_tool("temporal"),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(o.port),
            "--ui-port",
            str(o.ui_port),
            "--db-filename",
            str(o.state_dir / "temporal.db"),
            "--log-level",
            "warn",
            *search.server_flags(),
        ]
        if o.namespace != "default":
            command += ["--namespace", o.namespace]
        component = self._spawn("temporal", command, stop_signal=signal.SIGTERM)

        async def ready() -> bool:
            with contextlib.suppress(Exception):
                self.client = await asyncio.wait_for(connect(self.address, o.namespace), timeout=3)
                return True
            return False

        await self._wait(component, ready, f"Temporal at {self.address}")
        self.console.print(f"[green]temporal[/green] ready at {self.address}, UI {self.ui_url}")

    async def _start_lab(self) -> None:
        o = self.options
        lab_dir = (o.state_dir / "lab").resolve()
        lab_dir.mkdir(parents=True, exist_ok=True)
        info_file = lab_dir / "lab.json"
        info_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "lab",
            "up",
            "--dir",
            str(lab_dir),
            "--clusters",
            str(o.clusters),
            "--state-file",
            str(lab_dir / "state.json"),
        ]
        component = self._spawn("lab", command, stop_signal=signal.SIGINT)

        async def ready() -> bool:
            with contextlib.suppress(OSError, ValueError):
                self.lab_info = json.loads(info_file.read_text())
                return bool(self.lab_info.get("pid") == component.process.pid)
            return False

        await self._wait(component, ready, "the lab")
        self.kubeconfig = str(self.lab_info.get("kubeconfig") or lab_dir / "kubeconfig")
        names = ", ".join(c["name"] for c in self.lab_info.get("clusters", []))
        self.console.print(f"[green]lab[/green] ready: {names}")

    async def _start_worker(self) -> None:
        o = self.options
        env = {
            "TEMPORAL_ADDRESS": self.address,
            "TEMPORAL_NAMESPACE": o.namespace,
            "FLOTILLA_TASK_QUEUE": o.task_queue,
            "FLOTILLA_STATE_DIR": str(o.state_dir.resolve()),
            # The audit sink: operation events into the database `flotilla api serve` and
            # `flotilla audit` use by default (docs/access.md).
            DATABASE_ENV: database_url(dict(os.environ), o.state_dir.resolve()),
        }
        if self.kubeconfig:
            env["FLOTILLA_KUBECONFIG"] = self.kubeconfig
        component = self._spawn(
            "worker", [sys.executable, "-m", "worker"], env=env, stop_signal=signal.SIGINT
        )
        assert self.client is not None
        client = self.client
        spawned = int(time.time()) - 1

        async def ready() -> bool:
            request = DescribeTaskQueueRequest(
                namespace=o.namespace,
                task_queue=TaskQueue(name=o.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
            with contextlib.suppress(Exception):
                response = await client.workflow_service.describe_task_queue(request)
                # The server remembers pollers for a while: count only ones seen since spawn.
                return any(p.last_access_time.seconds >= spawned for p in response.pollers)
            return False

        await self._wait(component, ready, f"the worker on task queue {o.task_queue!r}")
        self.console.print(f"[green]worker[/green] polling task queue {o.task_queue!r}")

    def _spawn(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        stop_signal: int,
    ) -> Component:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        component = Component(name, process, log, stop_signal)
        self.components.append(component)
        return component

    async def _wait(
        self, component: Component, ready: Callable[[], Awaitable[bool]], what: str
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        with self.console.status(f"starting {what}..."):
            while not await ready():
                if component.process.poll() is not None:
                    raise CliError(
                        f"{component.name} exited with code {component.process.returncode} "
                        f"while starting: {_tail(component.log)} (log: {component.log})"
                    )
                if time.monotonic() > deadline:
                    raise CliError(
                        f"{what} not ready after {READY_TIMEOUT:.0f}s (log: {component.log})"
                    )
                await asyncio.sleep(0.2)


def _require_free_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise CliError(
                f"port {port} is already in use (another `flotilla up` or Temporal server?): "
                "stop it, pick other ports with --port/--ui-port, or reuse it with "
                f"--temporal-address 127.0.0.1:{port}"
            ) from None


def _venv_tool(name: str) -> str:
    """A tool installed next to this Python (the venv's bin/), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise CliError(f"`{name}` not found: install the project (`make install`)")
    return found


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when its parent dies."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_process(component: Component) -> None:
    process = component.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(component.stop_signal)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything it left in its session


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[:400]


def settings_options(**overrides: Any) -> StackOptions:
    """StackOptions from FLOTILLA_* settings, with CLI flags applied on top."""
    settings = Settings.from_env()
    base = StackOptions(
        state_dir=settings.state_dir,
        task_queue=settings.task_queue,
        health_interval=settings.health_interval,
        kubeconfig=settings.kubeconfig,
    )
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


async def serve(
    options: StackOptions,
    *,
    console: Console,
    after_start: Callable[[Stack], Awaitable[bool]] | None = None,
) -> None:
    """Runs the stack until SIGINT/SIGTERM. `after_start` (the demo) runs once it is up;
    when it returns True the stack stops without waiting for a signal."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = Stack(options, console=console)
    try:
        work = asyncio.create_task(_run(stack, console, after_start, stop))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            console.print("[dim]stopping...[/dim]")
        with contextlib.suppress(asyncio.CancelledError):
            await work
        stopped.cancel()
    finally:
        await stack.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(
    stack: Stack,
    console: Console,
    after_start: Callable[[Stack], Awaitable[bool]] | None,
    stop: asyncio.Event,
) -> None:
    await stack.start()
    print_banner(stack, console)
    if after_start is not None and await after_start(stack):
        return
    console.print("[bold]flotilla is up[/bold]; press Ctrl-C to stop")
    await stop.wait()


def print_banner(stack: Stack, console: Console) -> None:
    o = stack.options
    lines = [f"Temporal   {stack.address} (namespace {o.namespace})"]
    if stack.ui_url:
        lines.append(f"Web UI     {stack.ui_url}")
    if stack.kubeconfig:
        lines.append(f"Kubeconfig {stack.kubeconfig}")
    lines.append(f"Logs       {stack.logs}")
    env = ""
    if stack.address not in ("127.0.0.1:7233", "localhost:7233"):
        env = f"TEMPORAL_ADDRESS={stack.address} "
    lines += ["", "Next:"]
    if stack.lab_info:
        mgmt = stack.lab_info.get("management_context", "lab-mgmt")
        lab_json = Path(stack.kubeconfig).parent / "lab.json"
        lines.append(
            f"  {env}flotilla clusters onboard --all-contexts --kubeconfig {stack.kubeconfig} "
            f"--strip-prefix lab- --labels-from {lab_json} "
            f"--capi-context {mgmt} --capi-namespace fleet"
        )
    lines += [f"  {env}flotilla clusters list", f"  {env}flotilla ops list"]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
