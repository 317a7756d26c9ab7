"""Bad input and unusual clusters: a dark cluster is skipped or fails by option; a rotation
while another operation holds a cluster's lock, an unknown cluster or a bad threshold gets
one line and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from activities.inventory import acquire_lock, release_lock
from fleet.certs_targets import CertRenewTarget
from fleet.models import LockRelease, LockRequest
from fleet.rollout_models import ClusterStatus, Outcome
from tests.certs.conftest import run_rollout, served_not_after
from tests.conftest import RunningWorker
from tests.starters.conftest import ARun, assert_one_line_error
from tests.workflows.core_support import kube_get, start_holder


async def test_dark_cluster_skipped_or_failed_by_option(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str]
) -> None:
    certs_lab.admin.fault("us-staging-1", "dark", mode="refuse")
    try:
        report = await run_rollout(temporal_worker, CertRenewTarget(force=True), "rest")
        assert report.outcome == Outcome.SUCCEEDED_WITH_SKIPS, report
        status = {o.name: o.status for o in report.outcomes}
        assert status.pop("us-staging-1") == ClusterStatus.UNREACHABLE
        assert set(status.values()) == {ClusterStatus.SUCCEEDED}
        report = await run_rollout(
            temporal_worker, CertRenewTarget(force=True), "rest", skip_unreachable=False
        )
        assert report.outcome == Outcome.HALTED, report
        failed = next(o for o in report.outcomes if o.name == "us-staging-1")
        assert failed.status == ClusterStatus.FAILED and "unreachable" in failed.reason
    finally:
        certs_lab.admin.clear("us-staging-1")


def ca_secret(lab: Any, cluster: str) -> dict[str, Any] | None:
    return kube_get(
        str(lab.kubeconfig), "lab-mgmt", f"/api/v1/namespaces/fleet/secrets/{cluster}-ca"
    )


async def test_rotation_while_locked_changes_nothing(
    temporal_worker: RunningWorker,
    certs_lab: Any,
    certs_fleet: list[str],
    aflotilla: ARun,
    temporal_address: str,
) -> None:
    client = temporal_worker.client
    holder = await start_holder(client)
    await acquire_lock(
        client, LockRequest(cluster="eu-prod-1", holder=holder.id, operation="maintenance")
    )
    before = ca_secret(certs_lab, "eu-prod-1")
    served = served_not_after(certs_lab, "eu-prod-1")
    try:
        result = await aflotilla(
            "certs",
            "rotate",
            "start",
            "--phase",
            "add",
            "-l",
            "env=prod",
            "--wait",
            address=temporal_address,
            env={"FLOTILLA_TASK_QUEUE": temporal_worker.task_queue},
        )
        line = assert_one_line_error(result, 1)
        assert "locked by" in line and holder.id in line, line
    finally:
        await release_lock(client, LockRelease(cluster="eu-prod-1", holder=holder.id))
        await holder.terminate()
    after = ca_secret(certs_lab, "eu-prod-1")
    assert (
        before
        and after
        and before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
    )
    assert served_not_after(certs_lab, "eu-prod-1") == served


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["certs", "list", "--expiring", "0d"], 2, "--expiring: threshold '0d' must be above 0"),
        (["certs", "list", "--expiring", "soon"], 2, "bad duration 'soon'"),
        (["certs", "scan", "--alert", "-3d"], 2, "--alert"),
        (["certs", "show", "nope"], 1, "unknown cluster 'nope'"),
        (["certs", "scan", "eu-dev-1", "nope"], 1, "unknown cluster 'nope'"),
        (["certs", "rotate", "start", "--phase", "swap"], 2, "--phase"),
        (["certs", "renew", "plan", "--within", "0"], 2, "--within"),
        (
            ["certs", "renew", "plan", "--no-control-plane", "--no-cert-manager"],
            2,
            "nothing to renew",
        ),
    ],
)
async def test_bad_input_one_line(
    aflotilla: ARun,
    temporal_address: str,
    certs_fleet: list[str],
    args: list[str],
    code: int,
    expected: str,
) -> None:
    result = await aflotilla(*args, address=temporal_address)
    assert expected in assert_one_line_error(result, code)
