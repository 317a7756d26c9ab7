"""Run `python worker.py` as a subprocess (for crash tests and benches)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client

ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(
    client: Client,
    task_queue: str,
    *,
    kubeconfig: str,
    log: Path,
    health_interval: int = 0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`health_interval` 0 keeps the worker from scheduling sweeps into other tests; `env`
    adds settings. Metrics and probes are off unless `env` sets FLOTILLA_METRICS_ADDRESS."""
    environment = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "FLOTILLA_TASK_QUEUE": task_queue,
        "FLOTILLA_KUBECONFIG": kubeconfig,
        "FLOTILLA_TRACING": "",
        "FLOTILLA_HEALTH_INTERVAL": str(health_interval),
        "FLOTILLA_CERT_SCAN_INTERVAL": "0",
        "FLOTILLA_METRICS_ADDRESS": "",
        **(env or {}),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
