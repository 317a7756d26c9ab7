"""What the platform benches share: a dev server whose log they can read, the real worker
as subprocesses, a meter of a process's CPU seconds and peak memory, the machine's load
average (benches print it at start and end, so a figure from a busy machine is seen as
one) and optional py-spy profiles. Run benches as `python bench/X.py` (this folder is then
on sys.path)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fleet import search

ROOT = Path(__file__).resolve().parents[1]
# What the dev server logs for a payload above its 512 KB warning limit.
BLOB_WARNING = "Blob data size exceeds the warning limit"


def load_average() -> str:
    """The 1-minute load average and the core count, e.g. "load 3.12 on 2 cores"."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevServer:
    """`temporal server start-dev` (the venv's) with Flotilla's search attributes, its
    output in `log` so a bench can count the server's payload-size warnings."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Client

    async def start(self) -> DevServer:
        command = [
            str(Path(sys.executable).parent / "temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warn",
            *search.server_flags(),
        ]
        self.process = _spawn(command, self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client = await Client.connect(
                    f"127.0.0.1:{self.port}", data_converter=pydantic_data_converter
                )
                break
            except RuntimeError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the dev server did not start; see {self.log}") from None
                await asyncio.sleep(0.3)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def blob_warnings(self) -> int:
        """How many payloads the server warned about (above 512 KB) so far."""
        return self.log.read_text(errors="replace").count(BLOB_WARNING)

    async def shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 20)


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )


def _die_with_parent() -> None:
    """In a child before exec (Linux): SIGTERM when the bench dies, however it dies."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def dev_server(directory: Path | None = None) -> DevServer:
    """A started dev server logging to `directory`/temporal.log (a new temporary folder
    when none is given). It has `client` and `shutdown()` as a WorkflowEnvironment has."""
    folder = directory or Path(tempfile.mkdtemp(prefix="flotilla-bench-"))
    return await DevServer(folder / "temporal.log").start()


def dev_server_pid() -> int:
    """The pid of the `temporal` dev server this process started (see `dev_server`)."""
    for child in psutil.Process().children(recursive=True):
        if child.name() == "temporal":
            return int(child.pid)
    raise RuntimeError("no temporal dev server among this process's children")


async def spawn_worker(
    server: DevServer | WorkflowEnvironment, queue: str, *, kubeconfig: Path, log: Path
) -> asyncio.subprocess.Process:
    """`python worker.py` on `queue`, without a health-sweep schedule (it would add load).

    The worker caches bytecode (next to `log`) as a deployed one does, whatever
    PYTHONDONTWRITEBYTECODE says here: the workflow sandbox imports each workflow module
    again for every new workflow instance, and compiling it every time cost ~15% of the
    worker's CPU in the onboarding bench."""
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "worker.py"),
        cwd=ROOT,
        env={
            **inherited,
            "PYTHONPYCACHEPREFIX": str(log.parent / "pycache"),
            "TEMPORAL_ADDRESS": server.client.service_client.config.target_host,
            "FLOTILLA_TASK_QUEUE": queue,
            "FLOTILLA_KUBECONFIG": str(kubeconfig),
            "FLOTILLA_HEALTH_INTERVAL": "0",
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )


async def wait_for_pollers(client: Client, queue: str, count: int = 1) -> None:
    """Returns once `count` workers poll `queue` for workflow and activity tasks: a
    deployed worker is already running when an operation starts, so a bench's clock
    starts after the worker's own start (imports, sandbox checks)."""
    deadline = time.monotonic() + 120
    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    while True:
        polling = []
        for kind in kinds:
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=kind,
                )
            )
            polling.append(len({p.identity for p in answer.pollers}))
        if min(polling) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} worker(s) did not poll {queue} within 120 s")
        await asyncio.sleep(0.2)


@dataclass
class Usage:
    cpu_seconds: float = 0.0  # user + system while measured
    peak_rss: int = 0  # bytes, the process's high-water mark


@asynccontextmanager
async def measured(pid: int) -> AsyncIterator[Usage]:
    """Measures process `pid` over the block; figures are filled in when it exits."""
    process = psutil.Process(pid)
    usage = Usage()
    sampled = 0

    async def sample() -> None:
        nonlocal sampled
        while True:
            sampled = max(sampled, process.memory_info().rss)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    before = process.cpu_times()
    try:
        yield usage
    finally:
        after = process.cpu_times()
        sampler.cancel()
        usage.cpu_seconds = (after.user + after.system) - (before.user + before.system)
        usage.peak_rss = _high_water_mark(pid) or sampled


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@contextmanager
def profiled(pids: dict[str, int], directory: Path | None) -> Iterator[None]:
    """With a `directory`, samples each named process with py-spy (if installed: `pip
    install py-spy`) over the block, writing `<name>.txt` (collapsed stacks, one line per
    stack with its sample count, for flame graphs or grep). Without one, does nothing."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if directory is None:
        yield
        return
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "50",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(directory / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        yield
    finally:
        for spy_process in spies:
            spy_process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for spy_process in spies:
            spy_process.wait(30)


def _high_water_mark(pid: int) -> int:
    """VmHWM from /proc (Linux); 0 where unavailable, so the sampled peak is used."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def stop_worker(worker: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after 30 s: a worker evicting thousands of cached runs can
    take minutes to shut down, and the figures are measured by then."""
    worker.terminate()
    try:
        await asyncio.wait_for(worker.wait(), 30)
    except TimeoutError:
        worker.kill()
        await worker.wait()
