"""CertScan on the lab: every seeded expiring source is found with the lab's own dates,
the records and search attributes mark what expires within the threshold, the trust map
names every consumer's CA."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet import search
from fleet.certs import CertScanRequest, CertScanResult
from fleet.certs_models import CertReport, CertSource, CertStatus
from fleet.ids import cluster_id
from starters.inventory import get_cluster
from tests.certs.conftest import SERVING_DAYS, save_history
from tests.conftest import RunningWorker
from tests.starters.conftest import ARun
from tests.workflows.core_support import eventually
from workflows.certs import CertScan


def fp(text: str) -> str:
    """A fingerprint as the lab writes it (`sha256:AB:CD...` or `sha256:abcd`) in ours."""
    return text.removeprefix("sha256:").replace(":", "").lower()


def lab_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def scan(worker: RunningWorker, **request: Any) -> tuple[str, CertScanResult]:
    wf_id = f"certscan:test-{uuid.uuid4().hex[:6]}"
    result = await worker.client.execute_workflow(
        CertScan.run, CertScanRequest(**request), id=wf_id, task_queue=worker.task_queue
    )
    return wf_id, result


async def test_scan_finds_every_seeded_expiry(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str]
) -> None:
    wf_id, result = await scan(temporal_worker, selector="suite=certs")
    await save_history(temporal_worker.client, wf_id, "CertScan")
    await save_history(temporal_worker.client, cluster_id("eu-dev-1"), "ClusterEntity-certs")
    assert sorted(result.clusters) == certs_fleet
    assert not result.failed and not result.unreachable and not result.missing
    client = temporal_worker.client
    for name in certs_fleet:
        truth = certs_lab.admin.certificates(name)
        report = CertReport.model_validate(
            await client.get_workflow_handle(cluster_id(name)).query("cert_report")
        )
        assert not report.problems, report.problems
        assert report.hub_accepts
        served = next(e for e in report.entries if e.source == CertSource.SERVING)
        assert served.not_after == lab_time(truth["serving"]["notAfter"]).replace(microsecond=0)
        assert served.fingerprint == fp(truth["serving"]["fingerprint"])
        machines = [e for e in report.entries if e.source == CertSource.MACHINE]
        assert [m.not_after for m in machines] == [served.not_after]
        assert report.serving_ca == fp(truth["signer"]["fingerprint"])
        # Every consumer of the cluster CA pins exactly the lab's trust bundle.
        bundle = {fp(t["fingerprint"]) for t in truth["trust"]}
        pins = {p.consumer: set(p.cas) for p in report.trust}
        assert pins[f"hub kubeconfig lab-{name}"] == bundle
        assert pins["ConfigMap kube-system/kube-root-ca.crt"] == bundle
        record = await get_cluster(client, name)
        assert record is not None and record.certs is not None
        expected = CertStatus.EXPIRING if name in ("eu-dev-1", "eu-staging-1") else CertStatus.OK
        assert record.certs.status == expected, (name, record.certs)
    dev = result.clusters["eu-dev-1"]
    now = datetime.now(UTC)
    assert dev.soonest is not None
    assert abs(dev.soonest - (now + timedelta(days=SERVING_DAYS["eu-dev-1"]))) < timedelta(hours=1)
    assert dev.source.startswith(("apiserver", "capi-machine"))
    staging = result.clusters["eu-staging-1"]
    assert staging.source in (
        "cert-manager Certificate default/web",
        "tls-secret Secret default/web-tls",
    )
    assert staging.soonest is not None and timedelta(days=9) < staging.soonest - now < timedelta(
        days=11
    )

    async def listed() -> list[str] | None:
        query = f'{search.CERT_STATUS.name} = "expiring" AND {search.KIND.name} = "cluster"'
        names = sorted([wf.id async for wf in client.list_workflows(query)])
        wanted = ["cluster:eu-dev-1", "cluster:eu-staging-1"]
        return names if set(wanted) <= set(names) else None

    assert await eventually(listed)


async def test_scan_of_one_named_cluster_and_alert_threshold(
    temporal_worker: RunningWorker, certs_fleet: list[str]
) -> None:
    _, result = await scan(temporal_worker, names=["eu-prod-1", "nope"], alert_seconds=400 * 86400)
    assert result.missing == ["nope"]
    assert list(result.clusters) == ["eu-prod-1"]
    assert result.clusters["eu-prod-1"].status == CertStatus.EXPIRING  # 365 d < 400 d
    await scan(temporal_worker, names=["eu-prod-1"])  # back to the default threshold


async def test_cli_list_show_scan(
    temporal_worker: RunningWorker,
    certs_fleet: list[str],
    aflotilla: ARun,
    temporal_address: str,
) -> None:
    env = {"FLOTILLA_TASK_QUEUE": temporal_worker.task_queue}
    listed = await aflotilla(
        "certs",
        "list",
        "--expiring",
        "30d",
        "-l",
        "suite=certs",
        "-o",
        "json",
        address=temporal_address,
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {(r["cluster"], r["source"]) for r in rows} >= {
        ("eu-dev-1", "apiserver"),
        ("eu-dev-1", "capi-machine"),
        ("eu-staging-1", "cert-manager"),
        ("eu-staging-1", "tls-secret"),
    }
    assert all(r["cluster"] in ("eu-dev-1", "eu-staging-1") for r in rows)
    assert not any("PRIVATE" in json.dumps(r) for r in rows)
    shown = await aflotilla("certs", "show", "eu-dev-1", address=temporal_address)
    assert shown.returncode == 0, shown.stderr
    assert "trust map" in shown.stdout and "kube-root-ca.crt" in shown.stdout
    assert "signs the API server" in shown.stdout and "hub handshake: verified" in shown.stdout
    scanned = await aflotilla("certs", "scan", "eu-prod-1", address=temporal_address, env=env)
    assert scanned.returncode == 0, scanned.stderr
    assert "eu-prod-1" in scanned.stdout and "ok" in scanned.stdout
    clusters = await aflotilla("clusters", "list", "-l", "suite=certs", address=temporal_address)
    assert "CERTS" in clusters.stdout and "expiring" in clusters.stdout
