"""Certificates across the lab fleet (docs/lab-certificates.md): per-cluster chains with
seeded expiries, control-plane Machines, KCP rollouts renewing the serving certificate, a
three-phase CA rotation through `<cluster>-ca`, cert-manager and cainjector.

Clients are real: TLS handshakes, the official Python client and kubectl."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException

from lab import testing
from lab.controllers.capi import CERTIFICATES_EXPIRY
from lab.controllers.common import CONFIGMAPS
from lab.runtime import Lab
from lab.testing import LabError, LabProcess
from tests.lab.conftest import Kubectl, ThreadedLab

WAIT = 20.0
EXPIRED, EXPIRING, HEALTHY = "eu-dev-1", "eu-staging-1", "us-staging-1"
CAPI, KCP_GROUP = "cluster.x-k8s.io", "controlplane.cluster.x-k8s.io"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedLab]:
    running = ThreadedLab(
        tmp_path_factory.mktemp("certs"),
        clusters=3,
        nodes=1,
        rollout_delay=0.05,
        upgrade_seconds=0.2,
        cert_expiry={EXPIRED: -3, EXPIRING: 5},
    )
    yield running
    running.close()


@pytest.fixture(scope="module")
def kubectl(lab: ThreadedLab, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """kubectl on a cluster whose CA stays put (its serving certificate is renewed)."""
    return Kubectl(lab.kubeconfig, f"lab-{EXPIRING}", tmp_path_factory.mktemp("kubectl"))


@pytest.fixture(scope="module")
def mgmt(lab: ThreadedLab) -> Iterator[client.ApiClient]:
    with lab.api_client("mgmt") as api:
        yield api


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def report(lab: ThreadedLab, name: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        return lab.lab.certificates(name)

    return lab.call(read())


def server(lab: ThreadedLab, name: str) -> str:
    return lab.lab.clusters[name].server


def kubeconfig_ca(lab: ThreadedLab, name: str) -> bytes:
    config = yaml.safe_load(lab.kubeconfig.read_text())
    entry = next(c for c in config["clusters"] if c["name"] == f"lab-{name}")
    return base64.b64decode(entry["cluster"]["certificate-authority-data"])


def machine(mgmt: client.ApiClient, cluster: str) -> dict[str, Any]:
    items = client.CustomObjectsApi(mgmt).list_namespaced_custom_object(
        CAPI,
        "v1beta1",
        "fleet",
        "machines",
        label_selector=f"cluster.x-k8s.io/cluster-name={cluster},cluster.x-k8s.io/control-plane",
    )["items"]
    assert len(items) == 1, [m["metadata"]["name"] for m in items]
    return dict(items[0])


def kcp(mgmt: client.ApiClient, cluster: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(mgmt).get_namespaced_custom_object(
            KCP_GROUP, "v1beta1", "fleet", "kubeadmcontrolplanes", f"{cluster}-control-plane"
        )
    )


def patch_kcp(mgmt: client.ApiClient, cluster: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(mgmt).patch_namespaced_custom_object(
        KCP_GROUP,
        "v1beta1",
        "fleet",
        "kubeadmcontrolplanes",
        f"{cluster}-control-plane",
        {"spec": spec},
    )


def ready(obj: dict[str, Any]) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == "Ready":
            return str(cond["status"])
    return None


def roll(mgmt: client.ApiClient, cluster: str) -> dict[str, Any]:
    """Sets rolloutAfter to the next second and waits for the replacement Machine."""
    old = machine(mgmt, cluster)["metadata"]["name"]
    after = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch_kcp(mgmt, cluster, {"rolloutAfter": after})
    eventually(
        lambda: (
            machine(mgmt, cluster)["metadata"]["name"] != old
            and ready(kcp(mgmt, cluster)) == "True"
        ),
        f"{cluster}: control plane rolled",
    )
    return machine(mgmt, cluster)


def handshake_error(url: str, ca: bytes) -> str | None:
    try:
        testing.verify_handshake(url, ca)
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)
    return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- per-cluster chains and Machines ---------------------------------------------------


def test_each_cluster_serves_its_own_chain_with_its_seeded_expiry(lab: ThreadedLab) -> None:
    now = datetime.now(UTC)
    days = {}
    for name in ("mgmt", EXPIRED, EXPIRING, HEALTHY):
        leaf = testing.served_certificate(server(lab, name))
        assert leaf.issuer.rfc4514_string() == f"O=lab:{name},CN=kubernetes"
        days[name] = (leaf.not_valid_after_utc - now).total_seconds() / 86400
    assert -3.01 < days[EXPIRED] < -2.9 and 4.9 < days[EXPIRING] < 5.01
    assert 364 < days[HEALTHY] < 366 and 364 < days["mgmt"] < 366
    assert "expired" in (handshake_error(server(lab, EXPIRED), kubeconfig_ca(lab, EXPIRED)) or "")
    assert handshake_error(server(lab, HEALTHY), kubeconfig_ca(lab, HEALTHY)) is None
    # one cluster's CA does not vouch for another's server
    assert handshake_error(server(lab, HEALTHY), kubeconfig_ca(lab, EXPIRING)) is not None


def test_control_plane_machines_carry_the_certificates_expiry(
    lab: ThreadedLab, mgmt: client.ApiClient
) -> None:
    leaf = testing.served_certificate(server(lab, EXPIRING))
    ma = machine(mgmt, EXPIRING)
    expected = leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ma["metadata"]["annotations"][CERTIFICATES_EXPIRY] == expected
    assert ma["status"]["certificatesExpiryDate"] == expected
    assert ma["status"]["nodeRef"]["name"] == f"{EXPIRING}-cp-0"
    assert ma["metadata"]["ownerReferences"][0]["kind"] == "KubeadmControlPlane"


def test_rollout_after_renews_an_expired_serving_certificate(
    lab: ThreadedLab, mgmt: client.ApiClient
) -> None:
    before = testing.served_certificate(server(lab, EXPIRED))
    ma = roll(mgmt, EXPIRED)
    after = testing.served_certificate(server(lab, EXPIRED))
    assert after.serial_number != before.serial_number
    assert after.not_valid_after_utc > datetime.now(UTC) + timedelta(days=364)
    assert ma["status"]["certificatesExpiryDate"] == after.not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert handshake_error(server(lab, EXPIRED), kubeconfig_ca(lab, EXPIRED)) is None
    # a control plane rolled once stays put: its new Machine is newer than rolloutAfter
    time.sleep(0.5)
    assert machine(mgmt, EXPIRED)["metadata"]["name"] == ma["metadata"]["name"]


def test_rollout_before_certificates_expiry_days(lab: ThreadedLab, mgmt: client.ApiClient) -> None:
    with pytest.raises(ApiException) as refused:
        patch_kcp(mgmt, EXPIRING, {"rolloutBefore": {"certificatesExpiryDays": 3}})
    assert refused.value.status == 422 and "greater than or equal to 7" in refused.value.body
    old = machine(mgmt, EXPIRING)["metadata"]["name"]
    patch_kcp(mgmt, EXPIRING, {"rolloutBefore": {"certificatesExpiryDays": 7}})
    eventually(lambda: machine(mgmt, EXPIRING)["metadata"]["name"] != old, "rolled for expiry")
    leaf = testing.served_certificate(server(lab, EXPIRING))
    assert leaf.not_valid_after_utc > datetime.now(UTC) + timedelta(days=364)


def test_a_machine_annotation_overrides_the_expiry_and_triggers_rollout_before(
    mgmt: client.ApiClient,
) -> None:
    ma = machine(mgmt, EXPIRING)  # rolloutBefore: 7 days from the test above
    soon = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.CustomObjectsApi(mgmt).patch_namespaced_custom_object(
        CAPI,
        "v1beta1",
        "fleet",
        "machines",
        ma["metadata"]["name"],
        {"metadata": {"annotations": {CERTIFICATES_EXPIRY: soon}}},
    )
    eventually(
        lambda: machine(mgmt, EXPIRING)["metadata"]["name"] != ma["metadata"]["name"],
        "rolled for an annotated expiry",
    )


def test_a_ca_secret_that_cannot_sign_holds_the_rollout(
    lab: ThreadedLab, mgmt: client.ApiClient
) -> None:
    core = client.CoreV1Api(mgmt)
    good = core.read_namespaced_secret(f"{HEALTHY}-ca", "fleet").data
    _, other_key = testing.new_ca()
    core.patch_namespaced_secret(f"{HEALTHY}-ca", "fleet", {"data": {"tls.key": b64(other_key)}})
    old = machine(mgmt, HEALTHY)["metadata"]["name"]
    patch_kcp(mgmt, HEALTHY, {"rolloutAfter": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})

    def held() -> bool:
        for cond in kcp(mgmt, HEALTHY).get("status", {}).get("conditions", []):
            if cond["type"] == "CertificatesAvailable" and cond["status"] == "False":
                return (
                    cond["reason"] == "CertificatesGenerationFailed"
                    and "tls.key" in cond["message"]
                )
        return False

    eventually(held, "CertificatesAvailable=False")
    assert machine(mgmt, HEALTHY)["metadata"]["name"] == old
    core.patch_namespaced_secret(f"{HEALTHY}-ca", "fleet", {"data": good})
    eventually(lambda: machine(mgmt, HEALTHY)["metadata"]["name"] != old, "rolled once fixed")
    eventually(lambda: ready(kcp(mgmt, HEALTHY)) == "True", "KCP ready")


# ---- CA rotation -----------------------------------------------------------------------


def root_cas(lab: ThreadedLab, name: str) -> set[str]:
    async def read() -> set[str]:
        store = lab.lab.clusters[name].store
        return {
            cm["data"]["ca.crt"]
            for cm in store.list(CONFIGMAPS)
            if cm["metadata"]["name"] == "kube-root-ca.crt"
        }

    return lab.call(read())


def test_ca_rotation_in_three_phases(lab: ThreadedLab, mgmt: client.ApiClient) -> None:
    name = HEALTHY
    core = client.CoreV1Api(mgmt)
    secret = core.read_namespaced_secret(f"{name}-ca", "fleet")
    old_ca, old_key = (base64.b64decode(secret.data[k]) for k in ("tls.crt", "tls.key"))
    new_ca, new_key = testing.new_ca()
    pinned_old = kubeconfig_ca(lab, name)
    assert pinned_old == old_ca
    url = server(lab, name)
    with lab.api_client(name) as workload:  # a webhook pinned by hand to the old CA
        client.AdmissionregistrationV1Api(workload).create_validating_webhook_configuration(
            {
                "metadata": {"name": "pinned"},
                "webhooks": [_webhook("pinned.example.com", url=f"{url}/", caBundle=b64(old_ca))],
            }
        )

    def write(bundle: bytes, key: bytes) -> None:
        core.patch_namespaced_secret(
            f"{name}-ca", "fleet", {"data": {"tls.crt": b64(bundle), "tls.key": b64(key)}}
        )

    # 1: trust both, still sign with the old CA
    write(old_ca + new_ca, old_key)
    roll(mgmt, name)
    assert root_cas(lab, name) == {(old_ca + new_ca).decode()}
    assert handshake_error(url, pinned_old) is None
    bundle = kubeconfig_ca(lab, name)
    assert bundle == old_ca + new_ca
    # 2: sign with the new CA; holders of the bundle keep working, the old pin breaks
    write(new_ca + old_ca, new_key)
    roll(mgmt, name)
    leaf = testing.served_certificate(url)
    assert leaf.issuer == x509.load_pem_x509_certificate(new_ca).subject
    assert handshake_error(url, bundle) is None
    assert handshake_error(url, pinned_old) == "unable to get local issuer certificate"
    consumers = {c["name"]: c for c in report(lab, name)["consumers"]}
    assert (
        consumers["pinned/pinned.example.com"]["error"] == "unable to get local issuer certificate"
    )
    verdicts = {k: c["trusted"] for k, c in consumers.items()}
    assert verdicts["pinned/pinned.example.com"] is False
    assert verdicts[f"{name}-kubeconfig"] is True
    assert all(v for k, v in verdicts.items() if k != "pinned/pinned.example.com")
    # 3: drop the old CA
    write(new_ca, new_key)
    roll(mgmt, name)
    assert root_cas(lab, name) == {new_ca.decode()}
    assert kubeconfig_ca(lab, name) == new_ca
    assert handshake_error(url, pinned_old) is not None
    assert handshake_error(url, old_ca + new_ca) is None
    with lab.api_client(name) as workload:  # a fresh client from the rewritten kubeconfig
        assert client.CoreV1Api(workload).read_namespace("default").metadata.name == "default"
    kubeconfig = core.read_namespaced_secret(f"{name}-kubeconfig", "fleet").data["value"]
    entry = yaml.safe_load(base64.b64decode(kubeconfig))["clusters"][0]["cluster"]
    assert base64.b64decode(entry["certificate-authority-data"]) == new_ca


def _webhook(name: str, **client_config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": client_config,
    }


# ---- cert-manager ----------------------------------------------------------------------

CERT_NS = "certs"
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {CERT_NS}}}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {{name: selfsigned, namespace: {CERT_NS}}}
spec: {{selfSigned: {{}}}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{name: root, namespace: {CERT_NS}}}
spec:
  isCA: true
  commonName: lab-root
  secretName: root-tls
  issuerRef: {{name: selfsigned, kind: Issuer}}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {{name: ca, namespace: {CERT_NS}}}
spec: {{ca: {{secretName: root-tls}}}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{name: web, namespace: {CERT_NS}}}
spec:
  secretName: web-tls
  dnsNames: [web.{CERT_NS}.svc]
  issuerRef: {{name: ca, kind: Issuer}}
"""


@pytest.fixture(scope="module")
def certs(lab: ThreadedLab, kubectl: Kubectl) -> Kubectl:
    kubectl.ok("apply", "-f", "-", stdin=MANIFESTS)
    return kubectl


def certificate(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl.ok("get", "certificate", name, "-n", CERT_NS, "-o", "json")))


def tls_secret(kubectl: Kubectl, name: str) -> dict[str, bytes]:
    data = json.loads(kubectl.ok("get", "secret", name, "-n", CERT_NS, "-o", "json"))["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


def test_cert_manager_issues_from_a_ca_issuer(certs: Kubectl) -> None:
    eventually(lambda: ready(certificate(certs, "web")) == "True", "web issued")
    web = certificate(certs, "web")
    assert web["status"]["revision"] == 1
    not_after = datetime.fromisoformat(web["status"]["notAfter"].replace("Z", "+00:00"))
    renewal = datetime.fromisoformat(web["status"]["renewalTime"].replace("Z", "+00:00"))
    assert not_after - renewal == timedelta(days=30)  # a third of the default 90 days
    secret = tls_secret(certs, "web-tls")
    assert secret["ca.crt"] == tls_secret(certs, "root-tls")["tls.crt"]
    leaf = x509.load_pem_x509_certificate(secret["tls.crt"])
    assert leaf.issuer.rfc4514_string() == "CN=lab-root"
    table = certs.ok("get", "certificates", "-n", CERT_NS)
    assert table.split("\n")[0].split() == ["NAME", "READY", "SECRET", "AGE"]
    row = next(line.split() for line in table.splitlines() if line.startswith("web "))
    assert row[:3] == ["web", "True", "web-tls"]
    requests = certs.ok("get", "certificaterequests", "-n", CERT_NS, "-o", "name")
    assert "certificaterequest.cert-manager.io/web-1" in requests


def test_renew_like_cmctl_reissues(lab: ThreadedLab, certs: Kubectl) -> None:
    eventually(lambda: ready(certificate(certs, "web")) == "True", "web issued")
    before = tls_secret(certs, "web-tls")["tls.crt"]
    with lab.api_client(EXPIRING) as api:
        custom = client.CustomObjectsApi(api)
        web = custom.get_namespaced_custom_object(
            "cert-manager.io", "v1", CERT_NS, "certificates", "web"
        )
        web["status"]["conditions"].append(
            {
                "type": "Issuing",
                "status": "True",
                "reason": "ManuallyTriggered",
                "message": "Certificate re-issuance manually triggered",
                "observedGeneration": web["metadata"]["generation"],
            }
        )
        custom.replace_namespaced_custom_object_status(
            "cert-manager.io", "v1", CERT_NS, "certificates", "web", web
        )
    eventually(lambda: certificate(certs, "web")["status"]["revision"] == 2, "revision 2")
    web = certificate(certs, "web")
    assert [c["type"] for c in web["status"]["conditions"]] == ["Ready"]
    assert tls_secret(certs, "web-tls")["tls.crt"] != before


def test_certificates_renew_when_their_renewal_time_passes(certs: Kubectl) -> None:
    certs.ok(
        "apply",
        "-f",
        "-",
        stdin=f"""
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{name: short, namespace: {CERT_NS}}}
spec:
  secretName: short-tls
  dnsNames: [short.{CERT_NS}.svc]
  duration: 1h
  renewBefore: 59m59s
  issuerRef: {{name: ca, kind: Issuer}}
""",
    )
    eventually(lambda: certificate(certs, "short")["status"].get("revision", 0) >= 2, "renewed")
    certs.ok("delete", "certificate", "short", "-n", CERT_NS)  # it would renew every second


def test_cainjector_follows_certificates_and_the_cluster_trust(
    lab: ThreadedLab, certs: Kubectl
) -> None:
    eventually(lambda: ready(certificate(certs, "web")) == "True", "web issued")
    certs.ok(
        "apply",
        "-f",
        "-",
        stdin=f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: web
  annotations: {{cert-manager.io/inject-ca-from: {CERT_NS}/web}}
webhooks:
- name: web.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {{service: {{name: web, namespace: {CERT_NS}}}}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: apiserver
  annotations: {{cert-manager.io/inject-apiserver-ca: "true"}}
webhooks:
- name: apiserver.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {{url: "https://127.0.0.1/"}}
""",
    )

    def bundle(kind: str, name: str) -> bytes:
        hook = json.loads(certs.ok("get", kind, name, "-o", "json"))["webhooks"][0]
        return base64.b64decode(hook["clientConfig"].get("caBundle", ""))

    eventually(
        lambda: (
            bundle("validatingwebhookconfiguration", "web")
            == tls_secret(certs, "web-tls")["ca.crt"]
        ),
        "web caBundle injected",
    )
    eventually(
        lambda: bundle("mutatingwebhookconfiguration", "apiserver") == kubeconfig_ca(lab, EXPIRING),
        "apiserver caBundle injected",
    )
    verdicts = {c["name"]: c["trusted"] for c in report(lab, EXPIRING)["consumers"]}
    assert verdicts["web/web.example.com"] is True
    assert verdicts["apiserver/apiserver.example.com"] is True


def test_seeded_certificates_keep_their_expiry_until_renewal_is_due(lab: ThreadedLab) -> None:
    async def seed() -> list[dict[str, Any]]:
        return [
            lab.lab.seed_certificate(
                HEALTHY, namespace="apps", name="soon", days=5, renew_before="24h"
            ),
            lab.lab.seed_certificate(HEALTHY, namespace="apps", name="due", days=5),
        ]

    soon, due = lab.call(seed())
    assert soon["status"]["revision"] == 1 and ready(soon) == "True"
    with lab.api_client(HEALTHY) as api:
        custom = client.CustomObjectsApi(api)

        def get(name: str) -> dict[str, Any]:
            return dict(
                custom.get_namespaced_custom_object(
                    "cert-manager.io", "v1", "apps", "certificates", name
                )
            )

        # renewBefore defaults to a third of 90 days: 5 days left is past the renewal time
        eventually(lambda: get("due")["status"]["revision"] == 2, "due renewed at once")
        time.sleep(0.3)
        assert get("soon")["status"]["revision"] == 1
        assert get("soon")["status"]["notAfter"] == soon["status"]["notAfter"]


# ---- the admin API, the CLI flag and the state file -------------------------------------


def test_admin_api_reports_reissues_and_seeds(tmp_path: Path) -> None:
    with LabProcess(clusters=1, directory=tmp_path, nodes=1, cert_expiry="eu-dev-1=-1") as proc:
        admin = proc.admin
        url = proc.info["clusters"][0]["server"]
        expired = admin.certificates("eu-dev-1")
        assert expired["serving"]["notAfter"] < datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert {c["kind"] for c in expired["consumers"]} == {"ConfigMap", "Secret", "Kubeconfig"}
        assert all(c["error"] and "expired" in c["error"] for c in expired["consumers"])
        renewed = admin.set_cert_expiry("eu-dev-1", 10)
        assert all(c["trusted"] for c in renewed["consumers"])
        leaf = testing.served_certificate(url)
        assert format(leaf.serial_number, "x") == renewed["serving"]["serial"]
        seeded = admin.seed_certificate("eu-dev-1", "apps", "api", -2, renewBefore="1h")
        assert seeded["status"]["conditions"][0]["reason"] == "Expired"
        with pytest.raises(LabError, match="expiresInDays"):
            admin.set_cert_expiry("eu-dev-1", "soon")  # type: ignore[arg-type]
        with pytest.raises(LabError, match="no cluster"):
            admin.certificates("nowhere")


async def test_a_restored_lab_serves_the_same_chains(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    first = Lab(directory=tmp_path, clusters=1, nodes=1, state_file=state_file)
    await first.start()
    tls = first.clusters["eu-dev-1"].tls
    assert tls is not None
    serial = tls.serving.cert.serial_number
    await first.stop()
    second = Lab(directory=tmp_path, clusters=1, nodes=1, state_file=state_file)
    await second.start()
    try:
        restored = second.clusters["eu-dev-1"].tls
        assert restored is not None and restored.serving.cert.serial_number == serial
        leaf = await asyncio.to_thread(
            testing.served_certificate, second.clusters["eu-dev-1"].server
        )
        assert leaf.serial_number == serial
    finally:
        await second.stop()
