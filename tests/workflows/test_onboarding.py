"""Onboarding against the lab: first onboarding, reconciling re-runs, a dead cluster,
missing permissions and a conflicting operation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.inventory import acquire_lock, get_record
from fleet.ids import onboard_id
from fleet.models import (
    CredentialRef,
    Health,
    LockRequest,
    OnboardRequest,
    OnboardResult,
    Phase,
)
from starters.inventory import onboard
from tests.conftest import RunningWorker, lab_request
from tests.workflows.core_support import baseline_versions, kube_get, start_holder
from tests.workflows.lab_support import lab_cluster, limited_kubeconfig


def failure(exc: WorkflowFailureError) -> ApplicationError:
    assert isinstance(exc.cause, ApplicationError)
    return exc.cause


async def run(worker: RunningWorker, req: OnboardRequest) -> OnboardResult:
    result = await onboard(worker.client, req, task_queue=worker.task_queue)
    assert isinstance(result, OnboardResult)
    return result


async def test_fleet_onboarded(onboarded_fleet: dict[str, OnboardResult], lab, worker) -> None:
    assert sorted(onboarded_fleet) == sorted(c["name"] for c in lab.info["clusters"])
    result = onboarded_fleet["eu-prod-1"]
    record = result.record
    assert record.phase == Phase.ACTIVE and record.lock is None
    assert record.labels["env"] == "prod" and record.labels["region"] == "eu"
    assert record.version == "v1.30.6" and record.node_count == 3
    assert record.management and record.management.cluster == "eu-prod-1"
    assert result.health.health == Health.HEALTHY
    assert result.baseline.created == [
        "Namespace/flotilla-system",
        "ServiceAccount/flotilla",
        "ClusterRole/flotilla",
        "ClusterRoleBinding/flotilla",
        "ConfigMap/flotilla-identity",
    ]
    identity = kube_get(
        str(lab.kubeconfig),
        "lab-eu-prod-1",
        "/api/v1/namespaces/flotilla-system/configmaps/flotilla-identity",
    )
    assert identity and identity["data"]["cluster"] == "eu-prod-1"
    assert json.loads(identity["data"]["labels"]) == record.labels
    stored = await get_record(worker.client, "eu-prod-1")
    assert stored and stored.health == Health.HEALTHY


async def test_reonboarding_reconciles(worker: RunningWorker, lab) -> None:
    with lab_cluster(lab, env="dev", region="eu") as name:
        req = lab_request(lab, name)
        first = await run(worker, req)
        assert len(first.baseline.created) == 5
        installed = await baseline_versions(str(lab.kubeconfig), f"lab-{name}")

        again = await run(worker, req)
        assert len(again.baseline.unchanged) == 5 and not again.baseline.created
        assert await baseline_versions(str(lab.kubeconfig), f"lab-{name}") == installed

        relabelled = req.model_copy(update={"labels": {"env": "staging", "region": "eu"}})
        changed = await run(worker, relabelled)
        assert changed.baseline.updated == ["ConfigMap/flotilla-identity"]
        assert changed.record.labels == {"env": "staging", "region": "eu"}
        after = await baseline_versions(str(lab.kubeconfig), f"lab-{name}")
        identity = "/api/v1/namespaces/flotilla-system/configmaps/flotilla-identity"
        assert {p: v for p, v in after.items() if p != identity} == {
            p: v for p, v in installed.items() if p != identity
        }
        new, old = after[identity], installed[identity]
        assert new and old and new[0] == old[0] and new[1] != old[1]  # same object, updated

        # Re-onboarding that names no management cluster keeps the known one.
        without_capi = relabelled.model_copy(update={"management": None})
        kept = await run(worker, without_capi)
        assert kept.record.management == req.management


async def test_dead_cluster_fails_with_a_clear_reason(worker: RunningWorker, lab) -> None:
    with lab_cluster(lab) as name:
        lab.admin.fault(name, "dark", mode="refuse")
        with pytest.raises(WorkflowFailureError) as failed:
            await run(worker, lab_request(lab, name))
        cause = failure(failed.value)
        assert cause.type == "ClusterUnreachable"
        assert f"{name} is not reachable" in cause.message
        assert await get_record(worker.client, name) is None  # nothing registered


async def test_missing_permissions_are_named(worker: RunningWorker, lab, tmp_path: Path) -> None:
    with lab_cluster(lab) as name:
        token = lab.admin.add_user(name, "viewer", ["get", "list", "watch"])
        context = limited_kubeconfig(lab, name, token, tmp_path / "viewer.kubeconfig")
        req = lab_request(lab, name).model_copy(
            update={
                "credential": CredentialRef(
                    kubeconfig=str(tmp_path / "viewer.kubeconfig"), context=context
                )
            }
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await run(worker, req)
        cause = failure(failed.value)
        assert cause.type == "MissingPermissions"
        for expected in (
            "create namespaces",
            "update configmaps in namespace flotilla-system",
            "create clusterroles.rbac.authorization.k8s.io",
        ):
            assert expected in cause.message
        assert "get namespaces" not in cause.message and "list nodes" not in cause.message
        assert token not in cause.message
        assert await get_record(worker.client, name) is None


async def test_reonboarding_refused_while_locked(worker: RunningWorker, lab) -> None:
    """Re-onboarding a cluster another operation holds is refused, naming the holder,
    and leaves the cluster untouched."""
    with lab_cluster(lab) as name:
        req = lab_request(lab, name)
        await run(worker, req)
        holder = await start_holder(worker.client)
        await acquire_lock(
            worker.client, LockRequest(cluster=name, holder=holder.id, operation="upgrade")
        )
        installed = await baseline_versions(str(lab.kubeconfig), f"lab-{name}")
        relabelled = req.model_copy(update={"labels": {"env": "prod"}})
        with pytest.raises(WorkflowFailureError) as failed:
            await run(worker, relabelled)
        cause = failure(failed.value)
        assert cause.type == "ClusterLocked" and holder.id in cause.message
        assert await baseline_versions(str(lab.kubeconfig), f"lab-{name}") == installed
        record = await get_record(worker.client, name)
        assert record and record.labels == req.labels and record.lock
        assert record.lock.holder == holder.id
        await holder.terminate()


async def test_bad_name_rejected_before_starting(worker: RunningWorker) -> None:
    req = OnboardRequest(name="Bad_Name", credential=CredentialRef(context="x"))
    with pytest.raises(ValueError, match="bad cluster name"):
        await onboard(worker.client, req, task_queue=worker.task_queue)
    handle = worker.client.get_workflow_handle(onboard_id("Bad_Name"))
    with pytest.raises(RPCError):
        await handle.describe()


async def test_wrong_credentials_fail_fast(worker: RunningWorker, lab, tmp_path: Path) -> None:
    path = tmp_path / "wrong.kubeconfig"
    context = limited_kubeconfig(lab, "eu-dev-1", "not-a-valid-token", path)
    base = lab_request(lab, "eu-dev-1").model_copy(update={"name": "wrong-token"})
    cases = [
        (CredentialRef(kubeconfig=str(path), context=context), "Unauthorized"),
        (CredentialRef(kubeconfig=str(path), context="no-such-context"), "BadCredentialRef"),
        (CredentialRef(kubeconfig=str(tmp_path / "missing"), context="x"), "BadCredentialRef"),
    ]
    for credential, expected in cases:
        with pytest.raises(WorkflowFailureError) as failed:
            await run(worker, base.model_copy(update={"credential": credential}))
        assert failure(failed.value).type == expected
    assert await get_record(worker.client, "wrong-token") is None


def test_requests_from_kubeconfig(lab) -> None:
    from starters.inventory import requests_from_kubeconfig

    labels = {c["name"]: c["labels"] for c in lab.info["clusters"]}
    contexts = [c["context"] for c in lab.info["clusters"]]
    requests = requests_from_kubeconfig(
        str(lab.kubeconfig), contexts=contexts, strip_prefix="lab-", labels=labels
    )
    assert [r.name for r in requests] == [c["name"] for c in lab.info["clusters"]]
    assert requests[0].credential.context == contexts[0]
    assert requests[0].labels == labels[requests[0].name]
    with pytest.raises(ValueError, match="no context"):
        requests_from_kubeconfig(str(lab.kubeconfig), contexts=["lab-nope"])
