"""One record per real cluster (its kube-system UID): a second name for the same cluster is
refused, also when both onboard at once, and offboarding never deletes anything in a
cluster other than the one its record was onboarded from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.inventory import get_record, register, release_lock
from fleet.models import (
    CredentialRef,
    LockRelease,
    OffboardResult,
    OnboardResult,
    Phase,
    RegisterRequest,
)
from starters.inventory import offboard, onboard, onboard_many
from tests.conftest import RunningWorker, lab_request
from tests.workflows.core_support import baseline_versions
from tests.workflows.lab_support import lab_cluster


def failure(exc: BaseException) -> ApplicationError:
    assert isinstance(exc, WorkflowFailureError) and isinstance(exc.cause, ApplicationError)
    return exc.cause


async def test_second_name_for_one_cluster_is_refused(worker: RunningWorker, lab) -> None:
    client, queue = worker.client, worker.task_queue
    with lab_cluster(lab) as name:
        req = lab_request(lab, name)
        first = await onboard(client, req, task_queue=queue)
        assert isinstance(first, OnboardResult) and first.record.uid
        copy = req.model_copy(update={"name": f"{name}-copy"})
        with pytest.raises(WorkflowFailureError) as refused:
            await onboard(client, copy, task_queue=queue)
        cause = failure(refused.value)
        assert cause.type == "DuplicateCluster"
        assert f"{copy.name} is the same cluster as {name}" in cause.message
        assert await get_record(client, copy.name) is None

        again = await onboard(client, req, task_queue=queue)  # the same name reconciles
        assert isinstance(again, OnboardResult) and again.record.uid == first.record.uid

        # Once the first record is offboarded, the cluster may be onboarded under another name.
        await offboard(client, name, task_queue=queue)
        moved = await onboard(client, copy, task_queue=queue)
        assert isinstance(moved, OnboardResult) and moved.record.uid == first.record.uid


async def test_concurrent_onboardings_of_one_cluster(worker: RunningWorker, lab) -> None:
    with lab_cluster(lab) as name:
        req = lab_request(lab, name)
        names = [f"{name}-a", f"{name}-b"]
        results = await onboard_many(
            worker.client,
            [req.model_copy(update={"name": n}) for n in names],
            task_queue=worker.task_queue,
        )
        won = [r for r in results if isinstance(r, OnboardResult)]
        lost = [failure(r) for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and [c.type for c in lost] == ["DuplicateCluster"]
        loser = next(n for n in names if n != won[0].record.name)
        assert await get_record(worker.client, loser) is None


def repoint(kubeconfig: Path, context: str, to_context: str) -> None:
    """Makes `context` reach the cluster (and user) of `to_context`."""
    config = yaml.safe_load(kubeconfig.read_text())
    by_name = {c["name"]: c for c in config["contexts"]}
    by_name[context]["context"] = dict(by_name[to_context]["context"])
    kubeconfig.write_text(yaml.safe_dump(config))


async def test_offboarding_never_touches_another_cluster(
    worker: RunningWorker, lab, tmp_path: Path
) -> None:
    """The record's context is repointed at another onboarded cluster: offboarding refuses
    and deletes nothing there; forced, it retires the record and still deletes nothing."""
    client, queue = worker.client, worker.task_queue
    with lab_cluster(lab) as name, lab_cluster(lab) as other:
        await onboard(client, lab_request(lab, other), task_queue=queue)
        own = tmp_path / "own.kubeconfig"
        shutil.copy(lab.kubeconfig, own)
        credential = CredentialRef(kubeconfig=str(own), context=f"lab-{name}")
        req = lab_request(lab, name).model_copy(update={"credential": credential})
        await onboard(client, req, task_queue=queue)
        repoint(own, f"lab-{name}", f"lab-{other}")
        before = await baseline_versions(str(lab.kubeconfig), f"lab-{other}")

        with pytest.raises(WorkflowFailureError) as refused:
            await offboard(client, name, task_queue=queue)
        cause = failure(refused.value)
        assert cause.type == "IdentityMismatch" and "nothing was deleted" in cause.message
        assert await baseline_versions(str(lab.kubeconfig), f"lab-{other}") == before
        record = await get_record(client, name)
        assert record and record.phase == Phase.ACTIVE and record.lock is None

        forced = await offboard(client, name, force=True, task_queue=queue)
        assert isinstance(forced, OffboardResult) and forced.removal is None
        assert forced.record.phase == Phase.OFFBOARDED and "left in place" in forced.note
        assert await baseline_versions(str(lab.kubeconfig), f"lab-{other}") == before
        kept = await get_record(client, other)
        assert kept and kept.phase == Phase.ACTIVE


async def test_offboarding_a_record_without_identity_deletes_nothing(
    worker: RunningWorker, lab
) -> None:
    """A record from before identities were recorded cannot be verified: nothing is
    deleted and the message says how to proceed."""
    client, queue = worker.client, worker.task_queue
    with lab_cluster(lab) as name:
        await onboard(client, lab_request(lab, name), task_queue=queue)
        before = await baseline_versions(str(lab.kubeconfig), f"lab-{name}")
        legacy = f"{name}-legacy"
        holder = f"setup:{legacy}"
        credential = lab_request(lab, name).credential
        await register(
            client,
            RegisterRequest(name=legacy, credential=credential, holder=holder),
            task_queue=queue,
        )
        await release_lock(client, LockRelease(cluster=legacy, holder=holder, phase=Phase.ACTIVE))
        with pytest.raises(WorkflowFailureError) as refused:
            await offboard(client, legacy, task_queue=queue)
        cause = failure(refused.value)
        assert cause.type == "IdentityUnknown" and f"Onboard {legacy} again" in cause.message
        assert await baseline_versions(str(lab.kubeconfig), f"lab-{name}") == before
