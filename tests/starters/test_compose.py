"""docker-compose.yml has the shape of a real deployment (no container engine here to run
it): services and their order, healthchecks, Temporal address, the worker's read-only
kubeconfig, and every search attribute of fleet/search.py registered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet import search

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgresql",
        "temporal",
        "temporal-admin-tools",
        "temporal-ui",
        "worker",
        "webhook",
    }
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["temporal-admin-tools"]["image"].startswith("temporalio/admin-tools:")
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert "postgresql-data" in compose["volumes"]


def test_start_order_and_healthchecks(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert depends(s["temporal"]) == {"postgresql": "service_healthy"}
    assert depends(s["temporal-ui"]) == {"temporal": "service_healthy"}
    assert depends(s["temporal-admin-tools"]) == {"temporal": "service_healthy"}
    assert depends(s["worker"]) == {
        "temporal": "service_healthy",
        "temporal-admin-tools": "service_completed_successfully",
    }
    for name in ("postgresql", "temporal", "temporal-ui", "worker"):
        assert s[name]["healthcheck"]["test"], name


def test_temporal_address(compose: dict[str, Any]) -> None:
    s = compose["services"]
    for name in ("temporal-ui", "temporal-admin-tools", "worker"):
        assert s[name]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233", name


def test_worker(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    dockerfile = ROOT / worker["build"]["dockerfile"]
    assert dockerfile.exists()
    assert 'CMD ["python", "-m", "worker"]' in dockerfile.read_text()
    env = worker["environment"]
    mounts = [v.split(":") for v in worker["volumes"]]
    kubeconfig_mounts = [m for m in mounts if m[-2] == env["FLOTILLA_KUBECONFIG"]]
    assert len(kubeconfig_mounts) == 1 and kubeconfig_mounts[0][-1] == "ro"


def test_search_attributes_registered(compose: dict[str, Any]) -> None:
    tools = compose["services"]["temporal-admin-tools"]
    script_mount = next(v for v in tools["volumes"] if "register-search-attributes" in v)
    script = (ROOT / script_mount.split(":")[0]).read_text()
    for key in search.ALL:
        assert f"{key.name}:{search.TYPE_NAMES[key.indexed_value_type.name]}" in script, key.name
    assert "search-attribute create" in script
    assert tools["entrypoint"][-1] == script_mount.split(":")[1]


def test_dynamic_config_mounted(compose: dict[str, Any]) -> None:
    temporal = compose["services"]["temporal"]
    host, target, mode = temporal["volumes"][0].split(":")
    assert mode == "ro" and target == "/etc/temporal/config/dynamicconfig"
    path = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"].split("/")[-1]
    assert yaml.safe_load((ROOT / host / path).read_text())


def test_webhook(compose: dict[str, Any]) -> None:
    """Opt-in (a profile), same image and start order as the worker, credentials only from
    the host's environment, the healthcheck on the served port."""
    s = compose["services"]
    webhook = s["webhook"]
    assert webhook["profiles"] == ["webhook"]
    assert webhook["build"] == s["worker"]["build"]
    assert depends(webhook) == depends(s["worker"])
    command = webhook["command"]
    assert command[:3] == ["flotilla", "webhook", "serve"] and "--insecure-no-auth" not in command
    port = command[command.index("--port") + 1]
    assert webhook["ports"][0].endswith(f":{port}")
    assert f"127.0.0.1:{port}/healthz" in webhook["healthcheck"]["test"][-1]
    env = webhook["environment"]
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    for name in ("FLOTILLA_WEBHOOK_SECRET", "FLOTILLA_WEBHOOK_TOKEN"):
        assert env[name] == f"${{{name}:-}}"
