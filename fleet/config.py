"""Flotilla settings: `FLOTILLA_*` environment variables with defaults that run the
embedded local stack. Temporal connection settings are not here: they come from the SDK's
env config (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, profiles)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel


class Settings(BaseModel):
    state_dir: Path = Path(".state")
    task_queue: str = "flotilla"
    # Kubeconfig used when a credential reference names none (the lab writes one here).
    kubeconfig: str = ""
    # Tracing: "" (off), "console", or an OTLP/HTTP endpoint URL.
    tracing: str = ""
    # Fleet health sweep interval in seconds (0 disables the schedule).
    health_interval: int = 300
    # Fleet certificate scan interval in seconds (0 disables the schedule).
    cert_scan_interval: int = 21600
    # Where the worker serves /metrics, /livez and /readyz ("" disables), host:port.
    metrics_address: str = "127.0.0.1:9464"
    # How often the worker refreshes its fleet gauges from the inventory, in seconds.
    metrics_fleet_interval: int = 60
    # The Temporal Web UI, for links from the overview page, ITSM notes and notifications.
    ui_url: str = "http://localhost:8233"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        state_dir = Path(env.get("FLOTILLA_STATE_DIR", ".state"))
        return cls(
            state_dir=state_dir,
            task_queue=env.get("FLOTILLA_TASK_QUEUE", "flotilla"),
            kubeconfig=env.get("FLOTILLA_KUBECONFIG", ""),
            tracing=env.get("FLOTILLA_TRACING", ""),
            health_interval=int(env.get("FLOTILLA_HEALTH_INTERVAL", "300")),
            cert_scan_interval=int(env.get("FLOTILLA_CERT_SCAN_INTERVAL", "21600")),
            metrics_address=env.get("FLOTILLA_METRICS_ADDRESS", "127.0.0.1:9464"),
            metrics_fleet_interval=int(env.get("FLOTILLA_METRICS_FLEET_INTERVAL", "60")),
            ui_url=env.get("FLOTILLA_UI_URL", "http://localhost:8233"),
        )
