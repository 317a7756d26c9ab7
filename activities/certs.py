"""Certificate inventory: read every certificate expiry and trust anchor of a cluster,
agentless, and record what was found on its inventory record.

Per cluster, one visit reads: the API server's served leaf by TLS handshake (verified with
the CA data of the hub's kubeconfig, so the scan also says whether the hub accepts it),
the certificate expiry of each control-plane Machine from the management cluster (Cluster
API), cert-manager Certificates, kubernetes.io/tls Secrets, and the trust consumers
(kube-root-ca.crt ConfigMaps, webhook caBundles, `ca.crt` of TLS Secrets, the hub's
kubeconfig). Only names, dates and SHA-256 fingerprints leave the activity: Secrets are
read on the worker and their keys dropped at once. A source that cannot be read is a
`problem` of the report, never a failure of the scan.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography import x509
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.api_session import ApiSession, open_session
from activities.inventory import _update, resolve_clusters
from activities.kube import api_client, api_error_message, request
from fleet import certs_kubeconfig, kubeconfig
from fleet.certs import (
    CertRecordRequest,
    CertReports,
    CertScanChunk,
    CertScanResult,
    entry_of,
    fingerprint,
    issuer_among,
    load_bundle,
    summarize,
)
from fleet.certs_models import CertEntry, CertReport, CertSource, TrustPin
from fleet.models import ClusterRecord, CredentialRef, ManagementRef
from fleet.rollout_models import ClusterAccess, ClusterNames

# (connect, read) seconds per request and per handshake: a dark cluster costs ~10 s.
SCAN_TIMEOUT = (3.0, 8.0)
HANDSHAKE_TIMEOUT = 5.0
# Clusters scanned at once on a worker, by every scan activity together (one pool: more
# threads would only contend for the interpreter; a cluster's scan mostly waits on it).
SCAN_THREADS = 16
_SCAN_POOL = ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="certscan")
# Updates in flight at once when recording, per activity.
RECORD_CONCURRENCY = 16
HEARTBEAT_SECONDS = 2.0

CAPI_MACHINES = "/apis/cluster.x-k8s.io/v1beta1/namespaces/{ns}/machines"
CONTROL_PLANE_LABEL = "cluster.x-k8s.io/control-plane"
CLUSTER_NAME_LABEL = "cluster.x-k8s.io/cluster-name"
EXPIRY_ANNOTATION = "machine.cluster.x-k8s.io/certificates-expiry"
CERTIFICATES = "/apis/cert-manager.io/v1/certificates"
TLS_SECRETS = "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls"
ROOT_CA_MAPS = "/api/v1/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt"
WEBHOOK_CONFIGS = (
    ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations"),
    ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
)


# --- TLS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """What one TLS connection to a server showed."""

    leaf: x509.Certificate | None  # None when no handshake completed
    verified: bool  # the handshake verified against the given CA data (and host)
    error: str = ""


def handshake(server: str, ca_pem: bytes, *, timeout: float = HANDSHAKE_TIMEOUT) -> Handshake:
    """Connects to `server` (an https URL) verifying with `ca_pem` (system roots when
    empty). When verification fails, connects again without it to learn what is served."""
    parts = urlsplit(server)
    host, port = parts.hostname or "", parts.port or 443
    trusting = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
    try:
        return Handshake(_peer(host, port, trusting, timeout), verified=True)
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or "verification failed"
    except (OSError, ssl.SSLError) as exc:
        return Handshake(None, verified=False, error=_why(exc))
    blind = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    try:
        return Handshake(_peer(host, port, blind, timeout), verified=False, error=why)
    except (OSError, ssl.SSLError) as exc:
        return Handshake(None, verified=False, error=_why(exc))


def _peer(host: str, port: int, context: ssl.SSLContext, timeout: float) -> x509.Certificate:
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return x509.load_der_x509_certificate(der)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS: {exc.reason}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else str(exc)


# --- one cluster ----------------------------------------------------------------------------


# Reads one API path (decoded JSON): an ApiSession's, or the Kubernetes client's.
Get = Callable[[str], Any]


def _list(api: Any, path: str) -> list[dict[str, Any]]:
    """Items at `path` through the Kubernetes client `api` (see `_items`)."""
    return _items(partial(request, api, "GET", timeout=SCAN_TIMEOUT), path)


def _items(get: Get, path: str) -> list[dict[str, Any]]:
    """Items at `path`; [] when the API does not serve it (CRD not installed: 404)."""
    try:
        answer = get(path)
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    return list((answer or {}).get("items") or [])


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class _Scan:
    """Collects one cluster's report; each `read_*` records a problem instead of raising."""

    def __init__(self, cluster: str):
        self.report = CertReport(cluster=cluster, scanned_at=datetime.now(UTC))
        self.cas: dict[str, x509.Certificate] = {}  # every CA seen, by fingerprint

    def attempt(self, what: str, read: Callable[[], None]) -> None:
        try:
            read()
        except Exception as exc:  # a source that cannot be read is reported, not raised
            self.report.problems.append(f"{what}: {api_error_message(self.report.cluster, exc)}")

    def pin(self, consumer: str, bundle: bytes | str) -> None:
        cas = load_bundle(bundle)
        for ca in cas:
            self.cas.setdefault(fingerprint(ca), ca)
        self.report.trust.append(TrustPin(consumer=consumer, cas=[fingerprint(c) for c in cas]))

    def add(self, entry: CertEntry) -> None:
        self.report.entries.append(entry)


# A cluster's control-plane Machines as read for a whole chunk, or why they could not be.
Machines = list[dict[str, Any]] | str


def scan_cluster(access: ClusterAccess, machines: Machines | None = None) -> CertReport:
    """One cluster's certificates and trust pins (see the module docstring); `machines`
    when they were read already for many clusters at once (`chunk_machines`)."""
    scan = _Scan(access.name)
    credential = access.credential
    hub: certs_kubeconfig.HubView | None = None

    def read_hub() -> None:
        nonlocal hub
        hub = certs_kubeconfig.view(kubeconfig.source_of(credential.kubeconfig), credential.context)
        scan.pin(f"hub kubeconfig {credential.context}", hub.ca_pem)
        for ca in load_bundle(hub.ca_pem):
            scan.add(entry_of(ca, source=CertSource.HUB_CA, name=f"context {credential.context}"))
        for cert in load_bundle(hub.client_cert_pem)[:1]:
            name = f"context {credential.context} client"
            scan.add(entry_of(cert, source=CertSource.HUB_CLIENT, name=name))

    scan.attempt("hub kubeconfig", read_hub)
    session = _read_serving(scan, hub, credential) if hub is not None else None
    if isinstance(machines, str):
        scan.report.problems.append(f"Cluster API Machines: {machines}")
    elif access.management is not None:
        management = access.management
        scan.attempt(
            "Cluster API Machines", lambda: _read_machines(scan, management, access.name, machines)
        )
    if session is not None:
        with session:
            _read_in_cluster(scan, session.get)
    elif scan.report.reachable:
        api = api_client(credential)
        _read_in_cluster(scan, partial(request, api, "GET", timeout=SCAN_TIMEOUT))
    return scan.report


def _read_serving(
    scan: _Scan, hub: certs_kubeconfig.HubView, credential: CredentialRef
) -> ApiSession | None:
    """Reads the served leaf: through a verified connection the in-cluster reads then use
    (returned), else by `handshake` (None: read through the Kubernetes client)."""
    try:
        session = open_session(
            hub,
            api_client(credential),
            connect_timeout=HANDSHAKE_TIMEOUT,
            read_timeout=SCAN_TIMEOUT[1],
        )
    except ApplicationError:  # an unusable reference: the in-cluster reads raise it
        session = None
    except (OSError, ssl.SSLError) as exc:  # as `handshake` reports it
        scan.report.reachable, scan.report.hub_accepts = False, False
        scan.report.problems.append(f"TLS handshake with {hub.server}: {_why(exc)}")
        return None
    shake = (
        Handshake(session.leaf, verified=True)
        if session is not None
        else handshake(hub.server, hub.ca_pem)
    )
    scan.report.hub_accepts = shake.verified
    if shake.leaf is None:
        scan.report.reachable = False
        scan.report.problems.append(f"TLS handshake with {hub.server}: {shake.error}")
        return None
    if not shake.verified:
        scan.report.problems.append(f"the hub does not accept {hub.server}: {shake.error}")
    scan.add(entry_of(shake.leaf, source=CertSource.SERVING, name=hub.server))
    scan.report.serving_ca = issuer_among(shake.leaf, scan.cas.values())
    return session


def _read_machines(
    scan: _Scan, management: ManagementRef, cluster: str, machines: list[dict[str, Any]] | None
) -> None:
    if machines is None:
        api = api_client(management.credential)
        selector = f"{CLUSTER_NAME_LABEL}%3D{cluster},{CONTROL_PLANE_LABEL}"
        path = f"{CAPI_MACHINES.format(ns=management.namespace)}?labelSelector={selector}"
        machines = _list(api, path)
    for machine in machines:
        annotations = (machine.get("metadata") or {}).get("annotations") or {}
        expiry = _time((machine.get("status") or {}).get("certificatesExpiryDate")) or _time(
            annotations.get(EXPIRY_ANNOTATION)
        )
        if expiry is not None:
            scan.add(
                CertEntry(
                    source=CertSource.MACHINE, name=f"Machine {_ref(machine)}", not_after=expiry
                )
            )


def _read_in_cluster(scan: _Scan, get: Get) -> None:
    def certificates() -> None:
        for cert in _items(get, CERTIFICATES):
            status = cert.get("status") or {}
            not_after = _time(status.get("notAfter"))
            if not_after is None:
                continue
            ready = next(
                (
                    c.get("status") == "True"
                    for c in status.get("conditions") or []
                    if c.get("type") == "Ready"
                ),
                None,
            )
            scan.add(
                CertEntry(
                    source=CertSource.CERT_MANAGER,
                    name=f"Certificate {_ref(cert)}",
                    not_after=not_after,
                    not_before=_time(status.get("notBefore")),
                    subject=str((cert.get("spec") or {}).get("commonName", "")),
                    renewal_time=_time(status.get("renewalTime")),
                    ready=ready,
                )
            )

    def secrets() -> None:
        for secret in _items(get, TLS_SECRETS):
            data = secret.get("data") or {}
            leaf = load_bundle(base64.b64decode(data.get("tls.crt") or ""))[:1]
            for cert in leaf:
                scan.add(
                    entry_of(cert, source=CertSource.TLS_SECRET, name=f"Secret {_ref(secret)}")
                )
            if data.get("ca.crt"):
                scan.pin(f"Secret {_ref(secret)} ca.crt", base64.b64decode(data["ca.crt"]))
            data.clear()  # the key goes no further than this loop

    def root_ca_maps() -> None:
        for cm in _items(get, ROOT_CA_MAPS):
            scan.pin(f"ConfigMap {_ref(cm)}", str((cm.get("data") or {}).get("ca.crt", "")))

    def webhooks() -> None:
        for kind, plural in WEBHOOK_CONFIGS:
            for config in _items(get, f"/apis/admissionregistration.k8s.io/v1/{plural}"):
                for hook in config.get("webhooks") or []:
                    bundle = (hook.get("clientConfig") or {}).get("caBundle")
                    if bundle:
                        scan.pin(f"{kind} {_ref(config)}/{hook.get('name')}", bundle)

    scan.attempt("cert-manager Certificates", certificates)
    scan.attempt("kubernetes.io/tls Secrets", secrets)
    scan.attempt("kube-root-ca.crt ConfigMaps", root_ca_maps)
    scan.attempt("webhook caBundles", webhooks)


def chunk_machines(clusters: list[ClusterAccess]) -> dict[str, Machines]:
    """The control-plane Machines of many clusters with one list per management cluster
    and namespace (`cluster-name in (...)`), by cluster; a failed list is the reason."""
    groups: dict[tuple[str, str, str], dict[str, str]] = {}  # CAPI name -> record name
    refs: dict[tuple[str, str, str], ManagementRef] = {}
    for access in clusters:
        if (m := access.management) is not None:
            key = (m.credential.kubeconfig, m.credential.context, m.namespace)
            groups.setdefault(key, {})[m.cluster] = access.name
            refs[key] = m
    found: dict[str, Machines] = {}
    for key, names in groups.items():
        ref = refs[key]
        selector = quote(f"{CLUSTER_NAME_LABEL} in ({','.join(names)}),{CONTROL_PLANE_LABEL}")
        path = f"{CAPI_MACHINES.format(ns=ref.namespace)}?labelSelector={selector}"
        try:
            items = _list(api_client(ref.credential), path)
        except Exception as exc:  # each cluster's report says it
            found.update(dict.fromkeys(names.values(), api_error_message("management", exc)))
            continue
        lists: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
        for machine in items:
            labels = (machine.get("metadata") or {}).get("labels") or {}
            owner = names.get(str(labels.get(CLUSTER_NAME_LABEL)))
            if owner is not None:
                lists[owner].append(machine)
        found.update(lists)
    return found


# --- activities -----------------------------------------------------------------------------


@activity.defn
async def scan_and_record(chunk: CertScanChunk) -> CertScanResult:
    """Reads how to reach each named cluster from its record, scans it (on the worker's
    SCAN_THREADS, shared by every scan) and records the report on its record, heartbeating
    every few seconds; returns this chunk's part of the scan's result. Never fails for a
    cluster: what could not be read is in its report's problems, a name without an active
    record is `missing`, a report its record refused is `failed`. Safe to run again: a
    record keeps the latest report."""
    client = activity.client()
    loop = asyncio.get_running_loop()
    result = CertScanResult()
    ticker = asyncio.create_task(_heartbeat_every(HEARTBEAT_SECONDS, result, len(chunk.names)))
    try:
        resolved = await resolve_clusters(ClusterNames(names=chunk.names))
        result.missing = resolved.missing
        machines = await loop.run_in_executor(_SCAN_POOL, chunk_machines, resolved.clusters)
        gate = asyncio.Semaphore(RECORD_CONCURRENCY)

        async def one(access: ClusterAccess) -> None:
            machine_list = machines.get(access.name)
            report = await loop.run_in_executor(_SCAN_POOL, scan_cluster, access, machine_list)
            async with gate:
                refusal = await _record(client, report, chunk.alert_seconds)
            activity.logger.info(
                "scanned %d certificates, %d problems",
                len(report.entries),
                len(report.problems),
                extra={"cluster": report.cluster},
            )
            if refusal:
                result.failed[report.cluster] = refusal
                return
            result.clusters[report.cluster] = summarize(report, chunk.alert_seconds)
            if not report.reachable:
                result.unreachable.append(report.cluster)

        await asyncio.gather(*(one(access) for access in resolved.clusters))
    finally:
        ticker.cancel()
    return result


async def _heartbeat_every(seconds: float, result: CertScanResult, total: int) -> None:
    """Heartbeats the chunk's progress while it runs (a cluster can wait its turn for a
    scan thread longer than a heartbeat timeout)."""
    while True:
        activity.heartbeat(f"{len(result.clusters) + len(result.failed)}/{total} scanned")
        await asyncio.sleep(seconds)


async def _record(client: Client, report: CertReport, alert_seconds: float) -> str:
    """Records `report` on its cluster's record (`record_certs` update); the reason when
    the record is gone or refused it, else ""."""
    try:
        await _update(
            client,
            report.cluster,
            "record_certs",
            CertRecordRequest(reports=[report], alert_seconds=alert_seconds),
            ClusterRecord,
        )
    except ApplicationError as exc:  # refused or unknown: a retry changes nothing
        return exc.message
    return ""


@activity.defn
async def record_certificates(request: CertRecordRequest) -> CertReports:
    """Records each report on its cluster's record (`record_certs` update); returns the
    reports that could not be recorded (record gone or refused), with the reason as their
    only problem."""
    gate = asyncio.Semaphore(RECORD_CONCURRENCY)
    client = activity.client()
    refused: list[CertReport] = []

    async def one(report: CertReport) -> None:
        async with gate:
            refusal = await _record(client, report, request.alert_seconds)
        if refusal:
            refused.append(
                CertReport(
                    cluster=report.cluster,
                    scanned_at=report.scanned_at,
                    reachable=report.reachable,
                    problems=[refusal],
                )
            )
        activity.heartbeat(report.cluster)

    await asyncio.gather(*(one(r) for r in request.reports))
    return CertReports(reports=refused)
