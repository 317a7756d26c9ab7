"""Git syncs and drift on the dev server and the lab, one real repository through its
history: baseline to every cluster through waves, a one-object change, drift in inform and
enforce mode (real `kubectl edit`), a fight with another controller, a workload moved by a
relabel (new copy healthy first), a removed file pruned, the prune guard, and bad commits
refused with file and line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.inventory import acquire_lock, release_lock
from fleet.models import FactsUpdate, LockRelease, LockRequest
from fleet.rollout_models import (
    ApproveRequest,
    ClusterStatus,
    Outcome,
    RolloutProgress,
    RolloutReport,
    WaveStatus,
)
from fleet.sync_models import DriftSweepInput, DriftSweepResult, SyncPreview
from lab.fighter import Fighter
from starters import cli_sync, rollouts
from starters.errors import CliError
from tests.conftest import RunningWorker
from tests.sync.support import NETPOL_A, QUOTA_A, QUOTA_C, WEB, GitRepo, cluster_api, read
from tests.workflows.rollout_support import eventually
from tests.workflows.test_rollout_lab import suite_clusters
from workflows.cluster import ClusterEntity
from workflows.drift import DriftSweep
from workflows.rollout import Rollout

BASELINE_OBJECTS = 20
HISTORIES = Path(__file__).parent / "histories"
RECORDING = os.environ.get("FLOTILLA_RECORD_HISTORIES") == "1"


async def record(client: Client, workflow_id: str, name: str) -> None:
    """With FLOTILLA_RECORD_HISTORIES=1, saves the history test_sync_replay.py replays."""
    if not RECORDING:
        return
    if not workflow_id:  # the newest SyncPlan run
        async for wf in client.list_workflows('WorkflowType = "SyncPlan"', limit=1):
            workflow_id = wf.id
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


async def sync(
    worker: RunningWorker, repo: GitRepo, **kw: Any
) -> tuple[SyncPreview, RolloutReport]:
    p = await cli_sync.preview(
        worker.client,
        str(repo.path),
        "main",
        started_by="tester",
        task_queue=worker.task_queue,
        **kw,
    )
    handle = await cli_sync.start(
        worker.client, p, rollout_id=uuid.uuid4().hex[:8], task_queue=worker.task_queue
    )
    return p, await handle.result()


async def sweep(
    client: Client, queue: str, repo: GitRepo, suite: str, clusters: list[str] | None = None
) -> DriftSweepResult:
    """A sweep of the baseline over the suite's clusters, or over `clusters` (as the
    bundle's schedule names them)."""
    return await client.execute_workflow(
        DriftSweep.run,
        DriftSweepInput(
            bundle="baseline", repo=str(repo.path), selector=f"suite={suite}", clusters=clusters
        ),
        id=f"drift:baseline:{uuid.uuid4().hex[:6]}",
        task_queue=queue,
        memo={"bundle": "baseline"},
    )


def kubectl_edit(lab: Any, cluster: str, kind: str, namespace: str, old: str, new: str) -> None:
    """A real `kubectl edit`, its editor a script replacing `old` with `new`."""
    editor = Path(os.environ.get("TMPDIR", "/tmp")) / f"editor-{uuid.uuid4().hex[:6]}.sh"
    editor.write_text(f"#!/bin/sh\nsed -i -e 's/{old}/{new}/' \"$1\"\n")
    editor.chmod(0o755)
    subprocess.run(
        ["kubectl", "--kubeconfig", str(lab.kubeconfig), "--context", f"lab-{cluster}"]
        + ["edit", kind, "compute" if kind == "resourcequota" else "default-deny", "-n", namespace],
        env={**os.environ, "EDITOR": str(editor), "KUBE_EDITOR": str(editor)},
        check=True,
        capture_output=True,
    )


def pods(lab: Any, cluster: str, path: str) -> str:
    obj = read(lab, cluster, path)
    assert obj is not None
    return str(obj["spec"]["hard"]["pods"])


async def test_git_sync_drift_and_placement(
    worker: RunningWorker, lab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_DRIFT_INTERVAL", "0")  # sweeps run by hand here
    client, queue = worker.client, worker.task_queue
    async with suite_clusters(worker, lab, 3) as names:
        suite = names[0].rsplit("-", 1)[0]
        repo = GitRepo(tmp_path / "repo", suite)

        # A baseline commit reaches every matching cluster; web goes to one of them.
        p, report = await sync(worker, repo)
        assert report.outcome == Outcome.SUCCEEDED, report
        assert report.target.endswith("by tester")
        assert sorted({o.wave for o in report.outcomes}) == ["canary", "rest"]
        assert {d.cluster for d in p.diffs} == set(names)
        for name in names:
            assert read(lab, name, NETPOL_A) is not None
        web_on = [n for n in names if read(lab, n, WEB) is not None]
        assert len(web_on) == 1
        creates = sorted(d.count("create") for d in p.diffs)
        assert creates == [BASELINE_OBJECTS, BASELINE_OBJECTS, BASELINE_OBJECTS + 1]

        # A commit changing one object changes only that object.
        repo.edit("bundles/baseline/quotas.yaml", 'pods: "20"', 'pods: "30"')
        sha = repo.commit("team-a: more pods")
        p, report = await sync(worker, repo)
        assert report.outcome == Outcome.SUCCEEDED, report
        changed = sorted((d.cluster, c.key, c.action) for d in p.diffs for c in d.changes)
        assert changed == [(n, "v1/ResourceQuota/team-a/compute", "change") for n in names]
        assert all(o.to_version == sha[:12] and o.reason == "+0 ~1 -0" for o in report.outcomes)
        assert all(pods(lab, n, QUOTA_A) == "30" for n in names)

        # A field removed from Git is removed from the object (server-side apply semantics).
        repo.edit("bundles/baseline/namespaces.yaml", "  labels:\n    tenant: team-b\n", "")
        repo.commit("team-b: no tenant label")
        p, report = await sync(worker, repo)
        assert report.outcome == Outcome.SUCCEEDED, report
        paths = sorted((c.key, c.paths) for d in p.diffs for c in d.changes)
        assert paths == [("v1/Namespace//team-b", [".metadata.labels.tenant"])] * len(names)
        namespace = read(lab, names[0], "/api/v1/namespaces/team-b")
        assert namespace is not None and "tenant" not in namespace["metadata"].get("labels", {})

        # Inform: a kubectl edit is reported with path, values and manager, not reverted.
        await asyncio.to_thread(
            kubectl_edit, lab, names[0], "resourcequota", "team-c", '"20"', '"50"'
        )
        found = await sweep(client, queue, repo, suite)
        drift = next(d for d in found.drifts if d.key == "v1/ResourceQuota/team-c/compute")
        assert (drift.path, drift.desired, drift.live) == (".spec.hard.pods", '"20"', '"50"')
        assert drift.manager == "kubectl-edit" and drift.mode == "inform" and not drift.corrected
        assert pods(lab, names[0], QUOTA_C) == "50"
        listed = await eventually(
            lambda: _listed(client, f"suite={suite}", "v1/ResourceQuota/team-c/compute")
        )
        assert listed.first_seen == drift.first_seen

        # Enforce: the edit is reported, and reverted once no operation holds the lock.
        holder = f"cluster:{names[2]}"  # a running workflow: the lock is not stale
        lock = LockRequest(cluster=names[0], holder=holder, operation="test")
        await acquire_lock(client, lock)
        await asyncio.to_thread(
            kubectl_edit, lab, names[0], "resourcequota", "team-a", '"30"', '"45"'
        )
        found = await sweep(client, queue, repo, suite)
        drift = next(d for d in found.drifts if d.key == "v1/ResourceQuota/team-a/compute")
        assert drift.live == '"45"' and not drift.corrected
        assert found.deferred == {names[0]: f"locked by {holder}"}
        assert pods(lab, names[0], QUOTA_A) == "45"
        await release_lock(client, LockRelease(cluster=names[0], holder=holder, phase=None))
        found = await sweep(client, queue, repo, suite)
        drift = next(d for d in found.drifts if d.key == "v1/ResourceQuota/team-a/compute")
        assert drift.live == '"45"' and drift.manager == "kubectl-edit" and drift.corrected
        assert pods(lab, names[0], QUOTA_A) == "30"

        # Another controller fighting a field: a conflict naming it, not a loop.
        with Fighter(
            cluster_api(lab, names[1]),
            QUOTA_A,
            {"spec": {"hard": {"pods": "99"}}},
            manager="quota-tuner",
            every=0.2,
        ):
            results = []
            for _ in range(5):
                await asyncio.sleep(0.5)
                results.append(await sweep(client, queue, repo, suite, clusters=names))
        on_1 = [[d for d in r.drifts if d.cluster == names[1]] for r in results]
        assert [r[0].corrected for r in on_1[:3]] == [True, True, True]
        assert on_1[3][0].conflict == "quota-tuner" and not on_1[3][0].corrected
        assert on_1[4][0].conflict == "quota-tuner"
        assert any("quota-tuner" in c for c in results[4].conflicts)
        assert pods(lab, names[1], QUOTA_A) == "99"  # left alone once in conflict
        if RECORDING:
            async for wf in client.list_workflows('WorkflowType = "DriftSweep"', limit=1):
                await record(client, wf.id, "DriftSweep-conflict")

        # Relabelling moves the workload; the new copy is healthy before the old one goes.
        old = web_on[0]
        relabelled = await client.get_workflow_handle(f"cluster:{old}").execute_update(
            ClusterEntity.update_facts,
            FactsUpdate(cluster=old, labels={"env": "dev", "region": "eu", "suite": suite}),
        )
        assert relabelled.labels["env"] == "dev"
        repo.settings("rest")  # one wave: the new copy and the old one are synced together
        repo.commit("one wave")
        p, report = await sync(worker, repo)
        assert report.outcome == Outcome.SUCCEEDED, report
        (move,) = p.changes
        assert move.bundle == "web" and move.removed == [old] and len(move.added) == 1
        new = move.added[0]
        assert read(lab, old, WEB) is None
        assert read(lab, new, WEB) is not None
        # The old cluster's child: check, wait for the new copy, apply (prune), verify;
        # the copy was found healthy (else the old one would be `kept`).
        steps = await _activities(client, f"{report.id}/{old}")
        sync_steps = [s for s in steps if s in ("apply_cluster", "wait_healthy_copy")]
        assert sync_steps == [
            "apply_cluster",
            "wait_healthy_copy",
            "apply_cluster",
            "apply_cluster",
        ]
        outcome = next(o for o in report.outcomes if o.name == old)
        assert outcome.reason.endswith(" -1"), outcome  # the Deployment; nothing kept
        assert pods(lab, names[1], QUOTA_A) == "30"  # the new commit's sync re-applied it
        await record(client, f"{report.id}/{old}", "SyncCluster-move")
        await record(client, report.id, "Rollout-sync-move")
        await record(client, "", "SyncPlan-move")

        # Removing a file prunes its objects (3 of 20: below the guard's 25%).
        repo.remove("bundles/baseline/network-policies.yaml")
        repo.commit("no default-deny")
        p, report = await sync(worker, repo)
        assert report.outcome == Outcome.SUCCEEDED, report
        assert all(d.count("delete") == 3 for d in p.diffs)
        assert all(read(lab, n, NETPOL_A) is None for n in names)

        # Past the threshold the guard asks for an approval: the run waits before its
        # first wave with nothing deleted; unanswered by the deadline, it halts.
        repo.remove("bundles/baseline/quotas.yaml")
        repo.commit("no quotas")
        p = await cli_sync.preview(client, str(repo.path), "main", task_queue=queue)
        assert not cli_sync.problems(p)
        assert all(d.approval.startswith("prune guard: would delete 6 of 1") for d in p.diffs)
        late = await cli_sync.start(
            client,
            p,
            rollout_id=uuid.uuid4().hex[:8],
            options={"approval_timeout": 2},
            task_queue=queue,
        )
        report = await late.result()
        assert report.outcome == Outcome.HALTED, report
        assert "no approval of wave rest" in report.halt_reason  # the one wave
        assert "prune guard" in report.halt_reason
        assert all(o.status == ClusterStatus.NOT_STARTED for o in report.outcomes)
        assert read(lab, names[0], QUOTA_A) is not None
        handle = await cli_sync.start(client, p, rollout_id=uuid.uuid4().hex[:8], task_queue=queue)
        waiting = await eventually(lambda: _asking(client, handle.id))
        assert set(waiting.asks) == set(names)
        assert read(lab, names[0], QUOTA_A) is not None
        await rollouts.control(
            client, handle.id, "approve", ApproveRequest(who="alice", wave="rest")
        )
        report = await handle.result()
        assert report.outcome == Outcome.SUCCEEDED, report
        assert [a.who for a in report.approvals] == ["alice"]
        await record(client, handle.id, "Rollout-sync-prune-ask")
        assert all(read(lab, n, QUOTA_A) is None for n in names)

        # Bad commits are refused with one line naming file and line; nothing applied.
        head = repo.git("rev-parse", "HEAD")
        for path, text, expected in [
            (
                "bundles/baseline/broken.yaml",
                "kind: Role\nmetadata: [a\n",
                "broken.yaml:2: invalid",
            ),
            (
                "bundles/baseline/widget.yaml",
                "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
                "widget.yaml:1: unknown kind Widget",
            ),
            ("bundles/web/bundle.yaml", "placement:\n  selector: env in (prod\n", "bundle.yaml:2:"),
        ]:
            repo.write(path, text)
            repo.commit(f"bad: {path}")
            with pytest.raises(CliError) as caught:
                await sync(worker, repo)
            assert expected in caught.value.message and "\n" not in caught.value.message
            repo.git("reset", "-q", "--hard", head)
        with pytest.raises(CliError, match="ref 'nope' does not exist"):
            await cli_sync.preview(client, str(repo.path), "nope", task_queue=queue)
        assert all(synced_sha(lab, n) == head for n in names)  # nothing applied


def synced_sha(lab: Any, cluster: str) -> str:
    """The commit the cluster's sync record says it is on."""
    record = read(lab, cluster, "/api/v1/namespaces/kube-system/configmaps/flotilla-sync")
    assert record is not None
    return str(json.loads(record["data"]["state"])["sha"])


async def _asking(client: Client, rollout: str) -> RolloutProgress | None:
    handle = client.get_workflow_handle_for(Rollout.run, rollout)
    progress = await handle.query(Rollout.progress)
    waiting = progress.waves[0].status == WaveStatus.AWAITING_APPROVAL
    return progress if waiting and progress.asks else None


async def _listed(client: Client, selector: str, key: str) -> Any:
    found = await cli_sync.drifts(client, selector=selector, bundle="baseline")
    return next((d for d in found if d.key == key), None)


async def _activities(client: Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
