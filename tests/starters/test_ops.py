"""`flotilla ops` over a real dev server: list, show (progress, details, summary) and
watch until the run ends, for a run that succeeds and one that fails."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from rich.console import Console
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from starters import render
from tests.starters.conftest import FLOTILLA, ARun, assert_one_line_error
from tests.starters.sample_ops import SampleEnd, SampleInput, SampleOperation

CLUSTERS = ["eu-dev-1", "eu-prod-1", "us-prod-1"]


def text_of(renderable: object) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_progress_view_renders_waves_and_scalars() -> None:
    progress = {
        "phase": "wave 2",
        "failure_budget": 1,
        "waves": [
            {"name": "canary", "clusters": [{"name": "eu-dev-1", "state": "succeeded"}]},
            {"name": "prod", "clusters": {"us-prod-1": {"state": "running", "step": "drain"}}},
        ],
    }
    text = text_of(render.progress_view(progress))
    for expected in ("phase", "wave 2", "canary", "eu-dev-1", "succeeded", "us-prod-1", "drain"):
        assert expected in text


def test_progress_view_renders_cluster_mapping_and_lists() -> None:
    progress = {"clusters": {"a": {"state": "done"}, "b": {"state": "failed"}}, "note": None}
    text = text_of(render.progress_view(progress))
    assert "a" in text and "failed" in text and "note" in text
    assert "7" in text_of(render.progress_view(7))


def test_records_table_compacts_wide_progress_rows() -> None:
    rows = [
        {
            "name": name,
            "index": 0,
            "reason": "",
            "to": "registry.k8s.io/coredns/coredns:v1.11.4",
            "target": "kube-system/coredns",
            "started_at": "2026-11-21T20:20:59Z",
        }
        for name in ("eu-dev-1", "us-prod-1")
    ]
    text = text_of(render.records_table("clusters", rows))
    assert "coredns:v1.11.4" in text and "registry.k8s.io" not in text
    assert "kube-system/coredns" in text  # not an image reference: kept whole
    assert "20:20:59" in text and "2026-11-21" not in text  # one shared date: dropped
    assert "reason" not in text and "index" not in text  # empty / redundant columns
    rows[1]["started_at"] = "2026-11-22T01:00:00Z"
    assert "11-22 01:00:00" in text_of(render.records_table("clusters", rows))


@dataclass
class SampleWorker:
    client: Client
    task_queue: str


@pytest.fixture
async def sample_worker(client: Client) -> AsyncIterator[SampleWorker]:
    queue = f"ops-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[SampleOperation]):
        yield SampleWorker(client, queue)


async def start_sample(sample: SampleWorker) -> WorkflowHandle[SampleOperation, object]:
    return await sample.client.start_workflow(
        SampleOperation.run,
        SampleInput(clusters=CLUSTERS),
        id=f"sample:{uuid.uuid4()}",
        task_queue=sample.task_queue,
        static_summary="Sample rollout across 3 clusters",
    )


async def wait_listed(aflotilla: ARun, address: str, workflow_id: str) -> list[dict[str, object]]:
    """Visibility is eventually consistent: poll `ops list` until the run appears."""
    for _ in range(100):
        result = await aflotilla("ops", "list", "-o", "json", address=address)
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, object]] = json.loads(result.stdout)
        if any(r["id"] == workflow_id for r in rows):
            return rows
    raise AssertionError(f"{workflow_id} never listed")


async def test_ops_list_show_and_watch_success(
    sample_worker: SampleWorker, aflotilla: ARun, temporal_address: str, cli_env: dict[str, str]
) -> None:
    handle = await start_sample(sample_worker)
    rows = await wait_listed(aflotilla, temporal_address, handle.id)
    row = next(r for r in rows if r["id"] == handle.id)
    assert row["kind"] == "sample" and row["status"] == "RUNNING" and row["outcome"] == "running"
    assert row["clusters"] == CLUSTERS

    shown = await aflotilla("ops", "show", handle.id, "-o", "json", address=temporal_address)
    assert shown.returncode == 0, shown.stderr
    op = json.loads(shown.stdout)
    assert op["summary"] == "Sample rollout across 3 clusters"
    assert op["details"] == "canary eu-dev-1 done; waiting"
    assert op["progress"]["waves"][0]["clusters"][0] == {"name": "eu-dev-1", "state": "succeeded"}

    table = await aflotilla("ops", "show", handle.id, address=temporal_address)
    assert "canary" in table.stdout and "us-prod-1" in table.stdout

    watch = await asyncio.create_subprocess_exec(
        FLOTILLA,
        "ops",
        "watch",
        handle.id,
        env={**cli_env, "TEMPORAL_ADDRESS": temporal_address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        first = await asyncio.wait_for(watch.stdout.readline(), 60)  # it is watching
        assert first
        await handle.signal(SampleOperation.end, SampleEnd())
        stdout, stderr = await asyncio.wait_for(watch.communicate(), 120)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    assert watch.returncode == 0, stderr
    text = (first + stdout + stderr).decode()
    assert "succeeded" in text and "Traceback" not in text


async def test_ops_watch_failed_run_exits_1(
    sample_worker: SampleWorker, aflotilla: ARun, temporal_address: str
) -> None:
    handle = await start_sample(sample_worker)
    await handle.signal(SampleOperation.end, SampleEnd(fail=True))
    result = await aflotilla("ops", "watch", handle.id, address=temporal_address)
    line = assert_one_line_error(result, 1)
    assert "failed" in line and "ClusterLocked" in line and "locked by rollout" in line
    shown_run = await aflotilla("ops", "show", handle.id, "-o", "json", address=temporal_address)
    shown = json.loads(shown_run.stdout)
    assert shown["status"] == "FAILED" and "ClusterLocked" in shown["failure"]
    assert shown["outcome"] == "failed"


async def test_ops_list_refuses_an_unknown_kind(aflotilla: ARun, temporal_address: str) -> None:
    result = await aflotilla("ops", "list", "--kind", "bogus", address=temporal_address)
    line = assert_one_line_error(result, 2)
    assert "unknown operation kind 'bogus'" in line and "rollout:k8s" in line
