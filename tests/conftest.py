"""Session fixtures shared by every test: a real Temporal dev server, a client, the lab
fleet (a `python -m lab up` subprocess) and a real Flotilla worker on a unique task queue.

Other test folders add fixtures in their own conftest.py.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fleet import search
from fleet.models import CredentialRef, ManagementRef, OnboardRequest, OnboardResult

if TYPE_CHECKING:
    from lab.testing import LabProcess

BIN = Path(sys.executable).parent
TEMPORAL = BIN / "temporal"


async def start_dev_server(*extra_args: str) -> WorkflowEnvironment:
    """A real dev server (free port, in-memory) with Flotilla's search attributes."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        search_attributes=search.ALL,
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=[*search.dynamic_config_flags(), *extra_args],
    )


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def temporal_address(client: Client) -> str:
    """host:port of the session's dev server, for CLI subprocesses."""
    return str(client.service_client.config.target_host)


@dataclass
class RunningWorker:
    client: Client
    task_queue: str


@pytest.fixture(scope="session")
async def temporal_worker(client: Client) -> AsyncIterator[RunningWorker]:
    """The real worker configuration on a unique task queue; needs no lab."""
    from worker import build_worker

    task_queue = f"flotilla-test-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, task_queue=task_queue):
        yield RunningWorker(client=client, task_queue=task_queue)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    """The default six-cluster lab in a subprocess, stopped at the end of the session."""
    from lab.testing import LabProcess

    with LabProcess(clusters=6, directory=tmp_path_factory.mktemp("lab")) as process:
        yield process


@pytest.fixture(scope="session")
def worker(temporal_worker: RunningWorker, lab: LabProcess) -> RunningWorker:
    """The running worker, resolving credentials through the lab's kubeconfig."""
    os.environ["FLOTILLA_KUBECONFIG"] = str(lab.kubeconfig)
    return temporal_worker


def lab_request(lab: LabProcess, name: str, **labels: str) -> OnboardRequest:
    """An OnboardRequest for lab cluster `name` (labels from the lab unless given)."""
    info: dict[str, Any] = next(c for c in lab.admin.clusters() if c["name"] == name)
    return OnboardRequest(
        name=name,
        credential=CredentialRef(kubeconfig=str(lab.kubeconfig), context=info["context"]),
        labels=labels or dict(info["labels"]),
        management=ManagementRef(
            credential=CredentialRef(
                kubeconfig=str(lab.kubeconfig), context=lab.info["management_context"]
            ),
            namespace="fleet",
            cluster=name,
        ),
    )


@pytest.fixture(scope="session")
async def onboarded_fleet(worker: RunningWorker, lab: LabProcess) -> dict[str, OnboardResult]:
    """Onboards the lab's default fleet once per session; maps names to results."""
    from starters.inventory import onboard_many

    requests = [lab_request(lab, c["name"]) for c in lab.info["clusters"]]
    results = await onboard_many(worker.client, requests, task_queue=worker.task_queue)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return {r.record.name: r for r in results if isinstance(r, OnboardResult)}
