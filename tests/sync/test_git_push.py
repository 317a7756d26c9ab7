"""The Git push webhook: a signed push starts one sync per SHA however often it is
delivered; a push of a commit that does not exist, or of a repository outside the
allowlist, is refused with one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleet.rollout_models import Outcome
from tests.conftest import RunningWorker
from tests.starters.conftest import FLOTILLA, assert_one_line_error
from tests.starters.test_webhook import serving
from tests.sync.support import NETPOL_A, GitRepo, read
from tests.workflows.test_rollout_lab import suite_clusters
from workflows.rollout import Rollout


async def test_a_push_starts_one_sync_per_sha(
    worker: RunningWorker,
    lab: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    temporal_address: str,
) -> None:
    monkeypatch.setenv("FLOTILLA_DRIFT_INTERVAL", "0")
    async with suite_clusters(worker, lab, 2) as names:
        repo = GitRepo(tmp_path / "repo", names[0].rsplit("-", 1)[0])
        monkeypatch.setenv("FLOTILLA_GIT_REPOS", f"{tmp_path}/other-*,{repo.path}")
        sha = repo.git("rev-parse", "HEAD")
        push = {"repo": str(repo.path), "after": sha, "ref": "refs/heads/main", "pusher": "dev"}
        async with serving(client=worker.client, task_queue=worker.task_queue) as hook:
            first, second = await asyncio.gather(
                hook.call("POST", "/v1/git/push", push),
                hook.call("POST", "/v1/git/push", push),
            )
            statuses = sorted([first[0], second[0]])
            assert statuses == [200, 201], (first, second)
            assert first[1]["workflow_id"] == second[1]["workflow_id"] == f"rollout:sync:{sha[:12]}"
            again = await hook.call("POST", "/v1/git/push", push)
            assert again[0] == 200 and again[1]["created"] is False

            handle = worker.client.get_workflow_handle_for(Rollout.run, f"rollout:sync:{sha[:12]}")
            report = await handle.result()
            assert report.outcome == Outcome.SUCCEEDED and report.target.endswith(
                "by webhook (push by dev)"
            )
            assert all(read(lab, n, NETPOL_A) is not None for n in names)

            missing = {**push, "after": "0" * 40}
            status, body = await hook.call("POST", "/v1/git/push", missing)
            assert status == 422 and "does not exist" in body["error"] and "\n" not in body["error"]
            status, body = await hook.call("POST", "/v1/git/push", {"repo": "x", "after": "main"})
            assert status == 422 and "after" in body["error"]
            # Only allowlisted repositories: the worker never clones one a caller names.
            elsewhere = {**push, "repo": "https://evil.example.com/fleet.git"}
            status, body = await hook.call("POST", "/v1/git/push", elsewhere)
            assert status == 403 and "not in FLOTILLA_GIT_REPOS" in body["error"]

        # The CLI: a preview of the synced commit changes nothing; bad input is one line.
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_address,
            "FLOTILLA_TASK_QUEUE": worker.task_queue,
        }
        shown = await asyncio.to_thread(flotilla, env, "sync", "plan", "--repo", str(repo.path))
        assert shown.returncode == 0, shown.stderr
        assert all(name in shown.stdout for name in names) and "sync HEAD@" in shown.stdout
        report_text = await asyncio.to_thread(flotilla, env, "sync", "show", sha[:12])
        assert report_text.returncode == 0 and "+20 ~0 -0" in report_text.stdout, report_text
        bad = await asyncio.to_thread(
            flotilla, env, "sync", "plan", "--repo", str(tmp_path / "nope"), "--ref", "main"
        )
        assert "is not a git repository" in assert_one_line_error(bad, 1)


def flotilla(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOTILLA, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
