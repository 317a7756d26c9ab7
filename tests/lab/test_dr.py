"""Disaster recovery on the lab, as Flotilla would drive it (docs/lab-dr.md).

The lab runs as a subprocess; the CNPG Clusters and the DNSEndpoint are read and patched
through the official Python client and kubectl over HTTPS, apps are seeded and measured
through the admin API, and the database endpoints are called over plain HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from lab.testing import CachingResolver, LabError, LabProcess

KUBECTL = str(Path(sys.executable).parent / "kubectl")
A, B, C = "eu-dev-1", "eu-staging-1", "us-staging-1"
CNPG, DNS = (
    ("postgresql.cnpg.io", "v1", "clusters"),
    ("externaldns.k8s.io", "v1alpha1", "dnsendpoints"),
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    with LabProcess(
        clusters=3,
        directory=tmp_path_factory.mktemp("lab-dr"),
        nodes=1,
        rollout_delay=0.05,
        dr_step=0.1,
        dns_sync=0.05,
        dr_crash_recovery=2.0,
    ) as running:
        yield running


def wait_for(predicate: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never true: {predicate}"
        time.sleep(0.05)


def api(lab: LabProcess, member: str) -> client.CustomObjectsApi:
    configuration = client.Configuration()
    config.load_kube_config(
        str(lab.kubeconfig), context=lab.contexts[member], client_configuration=configuration
    )
    configuration.retries = False
    return client.CustomObjectsApi(client.ApiClient(configuration))


def get(lab: LabProcess, member: str, app: str, what: tuple[str, str, str] = CNPG) -> Any:
    name = app if what == DNS else f"{app}-{member}"
    return api(lab, member).get_namespaced_custom_object(*what[:2], app, what[2], name)


def patch(lab: LabProcess, member: str, app: str, body: dict[str, Any], what: Any = CNPG) -> Any:
    name = app if what == DNS else f"{app}-{member}"
    return api(lab, member).patch_namespaced_custom_object(*what[:2], app, what[2], name, body)


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == type_), {})


def host(app: str, member: str) -> str:
    return f"{app}-{member}-rw.{app}.svc.{member}.lab"


def db(lab: LabProcess, app: str, member: str, path: str = "/status", body: Any = None) -> Any:
    """Calls a member's database endpoint, found through its LoadBalancer Service."""
    address = next(m["address"] for m in lab.admin.dr_app(app)["members"] if m["member"] == member)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://{address}{path}", data=data, headers={"Host": host(app, member)}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read())}


def point_dns(lab: LabProcess, app: str, member: str) -> None:
    endpoint = get(lab, "mgmt", app, DNS)
    endpoint["spec"]["endpoints"][0]["targets"] = [host(app, member)]
    updated = api(lab, "mgmt").replace_namespaced_custom_object(
        *DNS[:2], app, DNS[2], app, endpoint
    )
    generation = updated["metadata"]["generation"]
    wait_for(lambda: get(lab, "mgmt", app, DNS)["status"].get("observedGeneration") == generation)


def kubectl(lab: LabProcess, member: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [KUBECTL, "--kubeconfig", str(lab.kubeconfig), "--context", lab.contexts[member]]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, check=False
    )


def acked_since(lab: LabProcess, workload: str, count: int) -> None:
    start = lab.admin.workload(workload)["acked"]
    wait_for(lambda: lab.admin.workload(workload)["acked"] >= start + count)


# ---- objects ---------------------------------------------------------------------------------


def test_seeded_app_serves_the_cnpg_and_external_dns_objects(lab: LabProcess) -> None:
    seeded = lab.admin.seed_dr_app("crd", [A, B], ttl=3)
    assert [(m["member"], m["role"], m["writable"]) for m in seeded["members"]] == [
        (A, "primary", True),
        (B, "replica", False),
    ]
    table = kubectl(lab, A, "get", "clusters.postgresql.cnpg.io", "-n", "crd")
    assert table.returncode == 0, table.stderr
    assert "crd-eu-dev-1" in table.stdout and "Cluster in healthy state" in table.stdout
    assert "PRIMARY" in table.stdout and "crd-eu-dev-1-1" in table.stdout
    assert kubectl(lab, C, "get", "clusters.postgresql.cnpg.io", "-A").returncode != 0  # no app
    assert (
        "crd" in kubectl(lab, "mgmt", "get", "dnsendpoints.externaldns.k8s.io", "-n", "crd").stdout
    )

    primary, replica = get(lab, A, "crd"), get(lab, B, "crd")
    assert primary["spec"]["replica"] == {
        "self": "crd-eu-dev-1",
        "primary": "crd-eu-dev-1",
        "source": "crd-eu-staging-1",
    }
    assert replica["spec"]["replica"]["source"] == "crd-eu-dev-1"
    assert primary["status"]["instancesReportedState"]["crd-eu-dev-1-1"]["isPrimary"] is True
    assert replica["status"]["instancesReportedState"]["crd-eu-staging-1-1"]["isPrimary"] is False
    assert primary["status"]["systemID"] == replica["status"]["systemID"]
    assert cond(primary, "Ready")["status"] == "True"
    wait_for(lambda: cond(get(lab, B, "crd"), "WALReceiverStreaming").get("reason") == "Streaming")
    assert cond(primary, "WALReceiverStreaming") == {}

    endpoint = get(lab, "mgmt", "crd", DNS)
    assert endpoint["spec"]["endpoints"] == [
        {
            "dnsName": "crd.db.lab",
            "recordType": "CNAME",
            "recordTTL": 3,
            "targets": [host("crd", A)],
        }
    ]
    assert endpoint["status"]["observedGeneration"] == 1
    answer = lab.admin.resolve("crd.db.lab")
    assert (answer["member"], answer["ttl"], answer["recordType"]) == (A, 3, "CNAME")

    service = client.CoreV1Api(api(lab, A).api_client).read_namespaced_service(
        "crd-eu-dev-1-rw", "crd"
    )
    ingress = service.status.load_balancer.ingress[0]
    assert ingress.ip == "127.0.0.1" and f"127.0.0.1:{ingress.ports[0].port}" == answer["address"]

    with pytest.raises(LabError, match="already exists"):
        lab.admin.seed_dr_app("crd", [A, B])
    with pytest.raises(LabError, match="no cluster named"):
        lab.admin.seed_dr_app("nope", [A, "nowhere-1"])


def test_database_endpoint_takes_writes_on_the_primary_only(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("ep", [A, B])
    written = db(lab, "ep", A, "/write", {"seq": 7})
    assert written["cluster"] == "ep-eu-dev-1" and written["timeline"] == 1
    refused = db(lab, "ep", B, "/write", {"seq": 8})
    assert refused == {"status": 503, "error": "cannot execute INSERT in a read-only transaction"}
    wait_for(lambda: 7 in db(lab, "ep", B, "/seqs")["seqs"])
    status = db(lab, "ep", B)
    assert status["role"] == "replica" and status["receiver"] == "streaming"
    assert status["replayLSN"] == status["sourceLSN"] == db(lab, "ep", A)["lsn"]
    assert status["lastReceiptTime"].endswith("Z")


# ---- planned switchover ----------------------------------------------------------------------


def test_planned_switchover_with_token_loses_no_writes(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("plan", [A, B], ttl=1)
    workload = lab.admin.start_workload("plan")
    acked_since(lab, workload, 10)

    patch(lab, A, "plan", {"spec": {"replica": {"primary": "plan-eu-staging-1"}}})
    wait_for(lambda: get(lab, A, "plan")["status"].get("demotionToken"))
    demoted = get(lab, A, "plan")
    assert demoted["status"]["instancesReportedState"]["plan-eu-dev-1-1"]["isPrimary"] is False
    assert cond(demoted, "ReplicaClusterSwitch")["status"] == "True"
    assert db(lab, "plan", A, "/write", {"seq": 0})["status"] == 503
    token = demoted["status"]["demotionToken"]

    patch(
        lab,
        B,
        "plan",
        {"spec": {"replica": {"primary": "plan-eu-staging-1", "promotionToken": token}}},
    )
    wait_for(lambda: db(lab, "plan", B)["writable"])
    promoted = get(lab, B, "plan")
    assert promoted["status"]["timelineID"] == 2
    assert promoted["status"]["lastPromotionToken"] == token
    point_dns(lab, "plan", B)
    acked_since(lab, workload, 20)
    wait_for(lambda: cond(get(lab, A, "plan"), "WALReceiverStreaming").get("reason") == "Streaming")

    report = lab.admin.stop_workload(workload)
    assert report["verified"] and report["verifiedOn"] == B
    assert report["lostCount"] == 0 and report["lost"] == []
    assert report["ackedBy"][A] > 0 and report["ackedBy"][B] > 0
    assert report["rtoSeconds"] > 0 and len(report["outages"]) == 1
    assert report["dualPrimaryProbes"] == 0


def test_promotion_token_waits_for_replay_and_refuses_a_foreign_one(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("tok", [A, B])
    lab.admin.seed_dr_app("other", [A, B])
    lab.admin.fault(B, "replication-lag", stop=True)
    try:
        for seq in range(1, 6):
            db(lab, "tok", A, "/write", {"seq": seq})
        patch(lab, A, "tok", {"spec": {"replica": {"primary": "tok-eu-staging-1"}}})
        wait_for(lambda: get(lab, A, "tok")["status"].get("demotionToken"))
        token = get(lab, A, "tok")["status"]["demotionToken"]
        patch(
            lab,
            B,
            "tok",
            {"spec": {"replica": {"primary": "tok-eu-staging-1", "promotionToken": token}}},
        )
        wait_for(lambda: get(lab, B, "tok")["status"]["phase"] == "Promoting to primary cluster")
        waiting = get(lab, B, "tok")["status"]
        assert "waiting for promotion token LSN" in waiting["phaseReason"]
        assert cond(get(lab, B, "tok"), "WALReceiverStreaming")["reason"] == "ReplicationStopped"
        assert not db(lab, "tok", B)["writable"]
    finally:
        lab.admin.clear(B, "replication-lag")
    wait_for(lambda: db(lab, "tok", B)["writable"])
    assert set(db(lab, "tok", B, "/seqs")["seqs"]) == {1, 2, 3, 4, 5}

    patch(lab, A, "other", {"spec": {"replica": {"primary": "other-eu-staging-1"}}})
    patch(
        lab,
        B,
        "other",
        {"spec": {"replica": {"primary": "other-eu-staging-1", "promotionToken": token}}},
    )
    unrecoverable = "Cluster is unrecoverable and needs manual intervention"
    wait_for(lambda: get(lab, B, "other")["status"]["phase"] == unrecoverable)
    assert "mismatching system identifiers" in get(lab, B, "other")["status"]["phaseReason"]
    assert not db(lab, "other", B)["writable"]


# ---- failover, the split-brain trap, rebuild ---------------------------------------------------


def test_unplanned_failover_loses_unreplayed_writes_and_the_old_primary_returns(
    lab: LabProcess,
) -> None:
    lab.admin.seed_dr_app("fail", [A, B], ttl=1)
    lab.admin.fault(B, "replication-lag", seconds=1.0)
    workload = lab.admin.start_workload("fail")
    try:
        acked_since(lab, workload, 60)
        lab.admin.fault(A, "dark", mode="refuse")
        wait_for(
            lambda: (
                cond(get(lab, B, "fail"), "WALReceiverStreaming").get("reason")
                == "SourceUnreachable"
            )
        )
        patch(lab, B, "fail", {"spec": {"replica": {"primary": "fail-eu-staging-1"}}})
        point_dns(lab, "fail", B)
        wait_for(lambda: db(lab, "fail", B)["writable"])
        acked_since(lab, workload, 10)
        lab.admin.clear(A, "dark")
    finally:
        lab.admin.clear(B)
        lab.admin.clear(A)

    # The old primary kept its spec: after crash recovery it is a writable primary again.
    recovering = db(lab, "fail", A)
    assert (recovering["role"], recovering["ready"], recovering["writable"]) == (
        "primary",
        False,
        False,
    )
    wait_for(lambda: db(lab, "fail", A)["writable"])
    # the operator's next reconcile reports the recovered instance (a tick after writes)
    wait_for(lambda: get(lab, A, "fail")["status"]["phase"] == "Cluster in healthy state")
    old = get(lab, A, "fail")
    assert old["spec"]["replica"]["primary"] == "fail-eu-dev-1"
    assert old["status"]["instancesReportedState"]["fail-eu-dev-1-1"]["isPrimary"] is True
    assert old["status"]["phase"] == "Cluster in healthy state"
    wait_for(lambda: lab.admin.workload(workload)["dualPrimaryProbes"] > 0)

    patch(lab, A, "fail", {"metadata": {"annotations": {"cnpg.io/fencedInstances": '["*"]'}}})
    wait_for(lambda: not db(lab, "fail", A)["writable"])
    assert (
        db(lab, "fail", A, "/write", {"seq": 0})["error"] == "the database system is shutting down"
    )
    report = lab.admin.stop_workload(workload)
    assert report["lostCount"] > 0 and report["verifiedOn"] == B
    assert report["rtoSeconds"] > 0 and report["dualPrimaryProbes"] > 0
    assert report["errors"].get("connection refused", 0) > 0

    # Demoted, it cannot follow the new timeline: it must be rebuilt.
    patch(
        lab,
        A,
        "fail",
        {
            "metadata": {"annotations": {"cnpg.io/fencedInstances": "[]"}},
            "spec": {"replica": {"primary": "fail-eu-staging-1", "source": "fail-eu-staging-1"}},
        },
    )
    wait_for(
        lambda: (
            cond(get(lab, A, "fail"), "WALReceiverStreaming").get("reason") == "TimelineDiverged"
        )
    )
    diverged = get(lab, A, "fail")["status"]
    assert diverged["phase"] == "Cluster is unrecoverable and needs manual intervention"
    assert "rebuild" in diverged["phaseReason"]

    spec = get(lab, A, "fail")["spec"]
    spec["bootstrap"] = {"pg_basebackup": {"source": "fail-eu-staging-1"}}
    api(lab, A).delete_namespaced_custom_object(*CNPG[:2], "fail", CNPG[2], "fail-eu-dev-1")
    body = {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "spec": spec}
    body["metadata"] = {"name": "fail-eu-dev-1", "namespace": "fail"}
    api(lab, A).create_namespaced_custom_object(*CNPG[:2], "fail", CNPG[2], body)
    wait_for(lambda: cond(get(lab, A, "fail"), "WALReceiverStreaming").get("reason") == "Streaming")
    rebuilt = get(lab, A, "fail")["status"]
    assert rebuilt["timelineID"] == 2 and rebuilt["phase"] == "Cluster in healthy state"


# ---- fencing and faults ----------------------------------------------------------------------


def test_fencing_stops_writes_until_lifted(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("fence", [A, B])
    patch(lab, A, "fence", {"metadata": {"annotations": {"cnpg.io/fencedInstances": '["*"]'}}})
    wait_for(lambda: get(lab, A, "fence")["status"].get("readyInstances") == 0)
    fenced = get(lab, A, "fence")
    assert cond(fenced, "Ready")["status"] == "False"
    assert fenced["status"]["instancesReportedState"]["fence-eu-dev-1-1"]["isPrimary"] is True
    assert db(lab, "fence", A, "/write", {"seq": 1})["status"] == 503
    patch(lab, A, "fence", {"metadata": {"annotations": {"cnpg.io/fencedInstances": "[]"}}})
    wait_for(lambda: db(lab, "fence", A)["writable"])
    assert db(lab, "fence", A, "/write", {"seq": 2})["cluster"] == "fence-eu-dev-1"


def test_partition_cuts_the_api_but_not_the_database(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("part", [A, B])
    lab.admin.fault(A, "partition")
    try:
        result = kubectl(lab, A, "get", "ns", "--request-timeout=5s")
        assert result.returncode != 0 and "refused" in result.stderr
        assert db(lab, "part", A, "/write", {"seq": 1})["cluster"] == "part-eu-dev-1"
        wait_for(lambda: 1 in db(lab, "part", B, "/seqs")["seqs"])
        assert cond(get(lab, B, "part"), "WALReceiverStreaming")["reason"] == "Streaming"
    finally:
        lab.admin.clear(A, "partition")
    assert kubectl(lab, A, "get", "ns").returncode == 0
    wait_for(lambda: 1 in db(lab, "part", B, "/seqs")["seqs"])

    # isolate: the other clusters (its replicas) lose it too, local clients do not.
    lab.admin.fault(A, "partition", isolate=True)
    try:
        wait_for(
            lambda: (
                cond(get(lab, B, "part"), "WALReceiverStreaming").get("reason")
                == "SourceUnreachable"
            )
        )
        assert db(lab, "part", A, "/write", {"seq": 2})["cluster"] == "part-eu-dev-1"
        assert 2 not in db(lab, "part", B, "/seqs")["seqs"]
    finally:
        lab.admin.clear(A, "partition")
    wait_for(lambda: 2 in db(lab, "part", B, "/seqs")["seqs"])


def test_dark_takes_the_database_down_too(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("dark", [A, B])
    address = next(m["address"] for m in lab.admin.dr_app("dark")["members"] if m["member"] == A)
    lab.admin.fault(A, "dark", mode="refuse")
    try:
        with pytest.raises(urllib.error.URLError, match="refused"):
            urllib.request.urlopen(f"http://{address}/status", timeout=5)
        wait_for(
            lambda: (
                cond(get(lab, B, "dark"), "WALReceiverStreaming").get("reason")
                == "SourceUnreachable"
            )
        )
    finally:
        lab.admin.clear(A, "dark")
    assert db(lab, "dark", A)["ready"] is False  # crash recovery
    wait_for(lambda: db(lab, "dark", A)["writable"])
    lab.admin.fault(A, "dark", mode="hang")
    try:
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(f"http://{address}/status", timeout=0.5)
    finally:
        lab.admin.clear(A, "dark")


def test_replication_lag_delays_the_replica(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("lag", [A, B])
    lab.admin.fault(B, "replication-lag", seconds=30)
    try:
        db(lab, "lag", A, "/write", {"seq": 1})
        wait_for(lambda: (db(lab, "lag", B)["lagSeconds"] or 0) > 0.2)
        assert 1 not in db(lab, "lag", B, "/seqs")["seqs"]
        assert db(lab, "lag", B)["receiver"] == "streaming"
    finally:
        lab.admin.clear(B, "replication-lag")
    wait_for(lambda: 1 in db(lab, "lag", B, "/seqs")["seqs"])
    with pytest.raises(LabError, match="replication-lag needs seconds"):
        lab.admin.fault(B, "replication-lag", seconds=-1)


def test_db_not_ready_after_promotion(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("slow", [A, B])
    lab.admin.fault(B, "db-not-ready", seconds=1.5)
    try:
        patch(lab, B, "slow", {"spec": {"replica": {"primary": "slow-eu-staging-1"}}})
        wait_for(lambda: db(lab, "slow", B)["role"] == "primary")
        assert (
            db(lab, "slow", B, "/write", {"seq": 1})["error"]
            == "the database system is starting up"
        )
        assert (
            get(lab, B, "slow")["status"]["phase"] == "Waiting for the instances to become active"
        )
        wait_for(lambda: db(lab, "slow", B)["writable"])
        wait_for(lambda: get(lab, B, "slow")["status"]["phase"] == "Cluster in healthy state")
    finally:
        lab.admin.clear(B, "db-not-ready")


def test_dns_switch_reaches_clients_after_the_ttl(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("dns", [A, B], ttl=2)
    workload = lab.admin.start_workload("dns", timeout_ms=5000)  # no timeouts on a busy machine
    acked_since(lab, workload, 5)
    point_dns(lab, "dns", B)  # a replica: writes through the new answer are refused
    assert lab.admin.resolve("dns.db.lab")["member"] == B
    read_only = "cannot execute INSERT in a read-only transaction"
    wait_for(lambda: lab.admin.workload(workload)["errors"].get(read_only), timeout=10)
    report = lab.admin.stop_workload(workload)
    assert report["errors"] == {read_only: report["failed"]}
    assert report["ackedBy"] == {A: report["acked"]}


def test_fault_cli_takes_the_dr_faults(lab: LabProcess) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lab", *args, "--dir", str(lab.directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = cli("dr", "cli", A, B, "--ttl", "2")
    assert result.returncode == 0, result.stderr
    assert "cli-eu-dev-1" in result.stdout and "streaming" in result.stdout
    assert cli("dr", "cli", A).returncode == 1  # one cluster: refused in one line
    result = cli("fault", C, "replication-lag", "--seconds", "2")
    assert result.returncode == 0 and "replication-lag(seconds=2.0)" in result.stdout
    result = cli("fault", C, "db-not-ready")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "db-not-ready needs seconds" in result.stderr
    assert cli("clear", C).returncode == 0


def test_three_members_cascade_through_a_planned_switchover(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("tri", [A, B, C])
    db(lab, "tri", A, "/write", {"seq": 1})
    patch(lab, A, "tri", {"spec": {"replica": {"primary": "tri-eu-staging-1"}}})
    wait_for(lambda: get(lab, A, "tri")["status"].get("demotionToken"))
    token = get(lab, A, "tri")["status"]["demotionToken"]
    promote = {"primary": "tri-eu-staging-1", "promotionToken": token}
    patch(lab, B, "tri", {"spec": {"replica": promote}})
    wait_for(lambda: db(lab, "tri", B)["writable"])
    db(lab, "tri", B, "/write", {"seq": 2})
    # C still names A as its source: it follows B's timeline through A.
    assert get(lab, C, "tri")["spec"]["replica"]["source"] == "tri-eu-dev-1"
    wait_for(lambda: 2 in db(lab, "tri", C, "/seqs")["seqs"])
    wait_for(lambda: get(lab, C, "tri")["status"].get("timelineID") == 2)
    assert db(lab, "tri", C)["receiver"] == "streaming"


def test_caching_resolver_keeps_an_answer_for_its_ttl(lab: LabProcess) -> None:
    lab.admin.seed_dr_app("ttl", [A, B], ttl=3)
    resolver = CachingResolver(lab.admin)
    assert resolver.resolve("ttl.db.lab")["member"] == A
    point_dns(lab, "ttl", B)
    assert lab.admin.resolve("ttl.db.lab")["member"] == B
    assert resolver.resolve("ttl.db.lab")["member"] == A  # cached: the TTL has not run out
    wait_for(lambda: resolver.resolve("ttl.db.lab")["member"] == B, timeout=10)
    with pytest.raises(LabError, match="NXDOMAIN"):
        resolver.resolve("nowhere.db.lab")
