"""The one poll loop: done, timeout, progress deadline, heartbeats; and the Cluster API
wait failing a cluster whose node stays NotReady (on the lab, with a short deadline)."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.capi import upgrade_control_plane, upgrade_workers
from activities.polling import PROGRESS_DEADLINE_ENV, Look, wait_until
from fleet.models import CredentialRef, ManagementRef
from fleet.rollout_models import CapiRequest
from tests.workflows.lab_support import lab_cluster


def run_wait(looks, *, timeout: float = 30, beats: list | None = None):
    env = ActivityEnvironment()
    if beats is not None:
        env.on_heartbeat = lambda *details: beats.append(details[0])
    return env.run(
        wait_until, looks, cluster="c1", goal="the goal", timeout_seconds=timeout, timeout_type="T"
    )


def test_returns_when_done_and_heartbeats_what_is_awaited() -> None:
    counter = itertools.count()

    def look() -> Look[int]:
        n = next(counter)
        return Look(value=n, done=n == 2, waiting_for=f"thing at {n}/2", progress=n)

    beats: list[str] = []
    assert run_wait(look, beats=beats) == 2
    assert beats == ["waiting for thing at 0/2", "waiting for thing at 1/2"]


def test_standing_still_fails_at_the_progress_deadline(monkeypatch) -> None:
    monkeypatch.setenv(PROGRESS_DEADLINE_ENV, "1s")

    def look() -> Look[None]:
        return Look(value=None, done=False, waiting_for="node n1 Ready", progress="same")

    with pytest.raises(ApplicationError) as failed:
        run_wait(look)
    assert failed.value.type == "NoProgress" and failed.value.non_retryable
    assert failed.value.message == "c1: no progress for 1s waiting for node n1 Ready"


def test_moving_objects_run_into_the_overall_timeout(monkeypatch) -> None:
    monkeypatch.setenv(PROGRESS_DEADLINE_ENV, "1s")
    counter = itertools.count()

    def look() -> Look[None]:
        return Look(value=None, done=False, waiting_for="x", progress=next(counter))

    with pytest.raises(ApplicationError) as failed:
        run_wait(look, timeout=2)
    assert failed.value.type == "T" and "the goal not reached after 2s" in failed.value.message


def test_bad_setting_is_not_retried(monkeypatch) -> None:
    monkeypatch.setenv(PROGRESS_DEADLINE_ENV, "soon")
    with pytest.raises(ApplicationError) as failed:
        run_wait(lambda: Look(value=None, done=True, waiting_for="", progress=0))
    assert failed.value.type == "BadSetting" and PROGRESS_DEADLINE_ENV in failed.value.message


async def test_not_ready_node_fails_the_worker_upgrade(lab, monkeypatch) -> None:
    """A worker node NotReady mid-upgrade fails the wait at the progress deadline with the
    reason, instead of holding the cluster for the whole upgrade timeout."""
    monkeypatch.setenv(PROGRESS_DEADLINE_ENV, "4s")
    with lab_cluster(lab) as name:
        management = ManagementRef(
            credential=CredentialRef(
                kubeconfig=str(lab.kubeconfig), context=lab.info["management_context"]
            ),
            namespace="fleet",
            cluster=name,
        )
        request = CapiRequest(
            cluster=name, management=management, version="v1.31.2", timeout_seconds=60
        )
        await asyncio.to_thread(ActivityEnvironment().run, upgrade_control_plane, request)
        lab.admin.fault(name, "nodes-not-ready", count=1)
        beats: list[str] = []
        env = ActivityEnvironment()
        env.on_heartbeat = lambda *details: beats.append(details[0])
        with pytest.raises(ApplicationError) as failed:
            await asyncio.to_thread(env.run, upgrade_workers, request)
    assert failed.value.type == "NoProgress" and failed.value.non_retryable
    message = failed.value.message
    assert message.startswith(f"{name}: no progress for 4s waiting for MachineDeployment")
    assert "2/2 updated, 1/2 ready (1 machine(s) not Ready)" in message
    assert beats[-1].startswith(f"waiting for MachineDeployment {name}-md-0 at v1.31.2")
