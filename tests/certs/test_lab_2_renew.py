"""Certificate renewal across waves on the lab: what is due is renewed through Cluster API
(KCP rollout) and cert-manager (`cmctl renew`), verified by handshake; with `force` every
cluster ends up serving a later expiry."""

from __future__ import annotations

from typing import Any

from activities.kube import api_client, request
from fleet.certs_targets import CertRenewTarget
from fleet.models import CredentialRef
from fleet.rollout_models import ClusterStatus, Outcome
from tests.certs.conftest import collect_keys, run_rollout, save_history, served_not_after
from tests.conftest import RunningWorker


def certificate(lab: Any, cluster: str, name: str) -> dict[str, Any]:
    api = api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{cluster}"))
    path = f"/apis/cert-manager.io/v1/namespaces/default/certificates/{name}"
    return dict(request(api, "GET", path))


async def test_renew_what_is_due_then_everything(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str]
) -> None:
    before = {name: served_not_after(certs_lab, name) for name in certs_fleet}
    collect_keys(certs_lab)
    web = certificate(certs_lab, "eu-staging-1", "web")["status"]
    api_revision = certificate(certs_lab, "eu-staging-1", "api")["status"]["revision"]

    report = await run_rollout(temporal_worker, CertRenewTarget(within=30 * 86400))
    assert report.outcome == Outcome.SUCCEEDED, report
    status = {o.name: o.status for o in report.outcomes}
    assert status["eu-dev-1"] == ClusterStatus.SUCCEEDED  # serving certificate due in 5 d
    assert status["eu-staging-1"] == ClusterStatus.SUCCEEDED  # Certificate web due in 10 d
    assert status["eu-prod-1"] == status["us-staging-1"] == ClusterStatus.UNCHANGED
    assert served_not_after(certs_lab, "eu-dev-1") > before["eu-dev-1"]
    assert served_not_after(certs_lab, "eu-prod-1") == before["eu-prod-1"]
    renewed = certificate(certs_lab, "eu-staging-1", "web")["status"]
    assert renewed["revision"] == web["revision"] + 1 and renewed["notAfter"] > web["notAfter"]
    assert certificate(certs_lab, "eu-staging-1", "api")["status"]["revision"] == api_revision
    await save_history(temporal_worker.client, report.id, "Rollout-certs-renew")
    await save_history(temporal_worker.client, f"{report.id}/eu-dev-1", "CertRenew")

    collect_keys(certs_lab)
    middle = {name: served_not_after(certs_lab, name) for name in certs_fleet}
    report = await run_rollout(temporal_worker, CertRenewTarget(force=True), "canary:1,50%,rest")
    assert report.outcome == Outcome.SUCCEEDED, report
    assert {o.status for o in report.outcomes} == {ClusterStatus.SUCCEEDED}
    for name in certs_fleet:
        assert served_not_after(certs_lab, name) > middle[name], name
        truth = certs_lab.admin.certificates(name)
        assert all(c["trusted"] for c in truth["consumers"]), truth["consumers"]
