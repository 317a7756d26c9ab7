"""cert-manager in one cluster: its CRDs, the certificates controller, CA and self-signed
issuers, and cainjector.

- A Certificate (cert-manager.io/v1) is issued into the kubernetes.io/tls Secret named by
  `spec.secretName` (tls.crt: leaf then issuing CA, tls.key, ca.crt) when the Secret is
  missing or does not match the spec, when `status.renewalTime` has passed (a timer fires
  then), when it has expired, and when a client sets the `Issuing` condition to True (what
  `cmctl renew` does: reason ManuallyTriggered). Each issuance records a CertificateRequest
  `<name>-<revision>`, bumps `status.revision`, sets notBefore/notAfter/renewalTime and
  Ready=True, and drops the Issuing condition. An issuer that is missing or not Ready
  leaves the Certificate Ready=False with Issuing=True until the issuer can sign.
- Issuer/ClusterIssuer: `spec.selfSigned` or `spec.ca.secretName` (ClusterIssuers read
  their Secret from the `cert-manager` namespace); status Ready follows the key pair.
- cainjector: a Validating/MutatingWebhookConfiguration annotated
  `cert-manager.io/inject-ca-from: <ns>/<certificate>`, `...inject-ca-from-secret:
  <ns>/<secret>` or `...inject-apiserver-ca: "true"` gets every webhook's
  `clientConfig.caBundle` from that Certificate's Secret `ca.crt`, that Secret, or the
  cluster's current trust bundle.

Keys are ECDSA P-256 whatever `spec.privateKey.algorithm` asks; no ACME, Vault or external
issuers (their Certificates stay Issuing).
"""

from __future__ import annotations

import base64
import copy
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from lab import pki
from lab.controllers.common import (
    CRDS,
    NAMESPACES,
    Timers,
    condition,
    owner_ref,
    set_condition,
    write_status,
)
from lab.store import ApiError, Event, Obj, ObjectStore, ResourceKey, now_iso

GROUP = "cert-manager.io"
CERTIFICATES = ResourceKey(GROUP, "certificates")
CERTIFICATEREQUESTS = ResourceKey(GROUP, "certificaterequests")
ISSUERS = ResourceKey(GROUP, "issuers")
CLUSTERISSUERS = ResourceKey(GROUP, "clusterissuers")
SECRETS = ResourceKey("", "secrets")
VALIDATING_WEBHOOKS = ResourceKey("admissionregistration.k8s.io", "validatingwebhookconfigurations")
MUTATING_WEBHOOKS = ResourceKey("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
WEBHOOK_KEYS = (VALIDATING_WEBHOOKS, MUTATING_WEBHOOKS)
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"

INJECT_FROM = "cert-manager.io/inject-ca-from"
INJECT_FROM_SECRET = "cert-manager.io/inject-ca-from-secret"
INJECT_APISERVER = "cert-manager.io/inject-apiserver-ca"

DEFAULT_DURATION = timedelta(hours=2160)
_READY_MESSAGE = "Certificate is up to date and has not expired"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


# ---- CRDs ------------------------------------------------------------------------------


def _crd(kind: str, plural: str, *, namespaced: bool, short: list[str], columns: list[Obj]) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app": "cert-manager", "app.kubernetes.io/name": "cert-manager"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["cert-manager"],
            },
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
        "status": {
            "acceptedNames": {"kind": kind, "plural": plural},
            "conditions": [
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            ],
            "storedVersions": ["v1"],
        },
    }


def _col(name: str, path: str, *, priority: int = 0, type_: str = "string") -> Obj:
    col: Obj = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


_READY = '.status.conditions[?(@.type=="Ready")].status'
_STATUS = '.status.conditions[?(@.type=="Ready")].message'
_AGE = _col("Age", ".metadata.creationTimestamp", type_="date")


def crds() -> list[Obj]:
    issuer_columns = [_col("Ready", _READY), _col("Status", _STATUS, priority=1), _AGE]
    return [
        _crd(
            "Certificate",
            "certificates",
            namespaced=True,
            short=["cert", "certs"],
            columns=[
                _col("Ready", _READY),
                _col("Secret", ".spec.secretName"),
                _col("Issuer", ".spec.issuerRef.name", priority=1),
                _col("Status", _STATUS, priority=1),
                _AGE,
            ],
        ),
        _crd(
            "CertificateRequest",
            "certificaterequests",
            namespaced=True,
            short=["cr", "crs"],
            columns=[
                _col("Approved", '.status.conditions[?(@.type=="Approved")].status'),
                _col("Denied", '.status.conditions[?(@.type=="Denied")].status'),
                _col("Ready", _READY),
                _col("Issuer", ".spec.issuerRef.name"),
                _col("Status", _STATUS, priority=1),
                _AGE,
            ],
        ),
        _crd("Issuer", "issuers", namespaced=True, short=[], columns=issuer_columns),
        _crd("ClusterIssuer", "clusterissuers", namespaced=False, short=[], columns=issuer_columns),
    ]


# ---- helpers ---------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """A Go duration (`2160h`, `1h30m`, `720h0m0s`); ValueError when malformed."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: str | None) -> bytes:
    try:
        return base64.b64decode(value or "", validate=True)
    except ValueError:
        return b""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def durations(spec: Obj) -> tuple[timedelta, timedelta]:
    """The Certificate's duration and renewBefore (default: a third of the duration)."""
    duration = parse_duration(spec["duration"]) if spec.get("duration") else DEFAULT_DURATION
    renew = parse_duration(spec["renewBefore"]) if spec.get("renewBefore") else duration / 3
    if renew >= duration:
        renew = duration / 3
    return duration, renew


class _Signer:
    """An issuer able to sign: `keypair` None means self-signed."""

    def __init__(self, keypair: pki.KeyPair | None) -> None:
        self.keypair = keypair


# ---- the controller --------------------------------------------------------------------


class CertManagerController:
    def __init__(self, store: ObjectStore, *, timers: Timers, apiserver_ca: str = "") -> None:
        self.store = store
        self.timers = timers
        self.apiserver_ca = apiserver_ca  # the cluster's trust bundle (inject-apiserver-ca)
        self._active = False

    def install(self) -> None:
        """Creates the CRDs that are missing (2,000 CRD objects cost a 500-cluster lab
        9 MiB, so the lab installs them on a cluster's first request)."""
        for crd in crds():
            if self.store.find(CRDS, "", crd["metadata"]["name"]) is None:
                self.store.create(CRDS, crd)

    def start(self) -> None:
        """Listens, and catches up with what is stored."""
        self._active = True
        self.store.add_listener(self.on_event)
        for key in (ISSUERS, CLUSTERISSUERS):
            for obj in self.store.list(key):
                self._queue_issuer(
                    key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                )
        for cert in self.store.list(CERTIFICATES):
            self.queue(cert["metadata"]["namespace"], cert["metadata"]["name"])
        self._queue_webhooks()

    def stop(self) -> None:
        self._active = False
        self.timers.cancel_all()

    def set_apiserver_ca(self, pem: str) -> None:
        self.apiserver_ca = pem
        self._queue_webhooks()

    # ---- events ------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if not self._active:
            return
        key, meta = event.key, event.object["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        if key == CERTIFICATES:
            if event.type == "DELETED":
                self.timers.cancel(("renew", ns, name))
            else:
                self.queue(ns, name)
            self._queue_webhooks()
        elif key in (ISSUERS, CLUSTERISSUERS):
            if event.type != "DELETED":
                self._queue_issuer(key, ns, name)
            self._queue_certificates_of(key, ns, name)
        elif key == SECRETS:
            self._on_secret(ns, name)
        elif key in WEBHOOK_KEYS and event.type != "DELETED":
            self._queue_webhooks()

    def _on_secret(self, ns: str, name: str) -> None:
        for cert in self.store.list(CERTIFICATES, ns):
            if cert.get("spec", {}).get("secretName") == name:
                self.queue(ns, cert["metadata"]["name"])
        for issuer in self.store.list(ISSUERS, ns):
            if issuer.get("spec", {}).get("ca", {}).get("secretName") == name:
                self._queue_issuer(ISSUERS, ns, issuer["metadata"]["name"])
                self._queue_certificates_of(ISSUERS, ns, issuer["metadata"]["name"])
        if ns == CLUSTER_RESOURCE_NAMESPACE:
            for issuer in self.store.list(CLUSTERISSUERS):
                if issuer.get("spec", {}).get("ca", {}).get("secretName") == name:
                    self._queue_issuer(CLUSTERISSUERS, "", issuer["metadata"]["name"])
                    self._queue_certificates_of(CLUSTERISSUERS, "", issuer["metadata"]["name"])
        self._queue_webhooks()

    def queue(self, ns: str, name: str) -> None:
        self.timers.soon(("cert", ns, name), lambda: self.sync_certificate(ns, name))

    def _queue_issuer(self, key: ResourceKey, ns: str, name: str) -> None:
        self.timers.soon(
            ("issuer", key.resource, ns, name), lambda: self._sync_issuer(key, ns, name)
        )

    def _queue_certificates_of(self, key: ResourceKey, ns: str, name: str) -> None:
        kind = "ClusterIssuer" if key == CLUSTERISSUERS else "Issuer"
        for cert in self.store.list(CERTIFICATES, ns if key == ISSUERS else None):
            ref = cert.get("spec", {}).get("issuerRef", {})
            if ref.get("name") == name and (ref.get("kind") or "Issuer") == kind:
                self.queue(cert["metadata"]["namespace"], cert["metadata"]["name"])

    def _queue_webhooks(self) -> None:
        self.timers.soon(("webhooks",), self.sync_webhooks)

    # ---- issuers -----------------------------------------------------------------------

    def _signer(self, issuer: Obj, secret_ns: str) -> tuple[_Signer | None, str, str]:
        """(signer or None, reason, message) for an Issuer/ClusterIssuer object."""
        spec = issuer.get("spec", {})
        if "selfSigned" in spec:
            return _Signer(None), "IsReady", ""
        if "ca" in spec:
            secret_name = spec["ca"].get("secretName", "")
            secret = self.store.find(SECRETS, secret_ns, secret_name)
            if secret is None:
                return (
                    None,
                    "ErrGetKeyPair",
                    f'Error getting keypair for CA issuer: secrets "{secret_name}" not found',
                )
            data = secret.get("data", {})
            try:
                keypair = pki.signer_of(_unb64(data.get("tls.crt")), _unb64(data.get("tls.key")))
            except ValueError as exc:
                return None, "ErrInvalidKeyPair", f"Error getting keypair for CA issuer: {exc}"
            return _Signer(keypair), "KeyPairVerified", "Signing CA verified"
        return None, "", ""  # ACME, Vault, ...: not run by the lab

    def _sync_issuer(self, key: ResourceKey, ns: str, name: str) -> None:
        issuer = self.store.find(key, ns, name)
        if issuer is None:
            return
        signer, reason, message = self._signer(
            issuer, ns if key == ISSUERS else CLUSTER_RESOURCE_NAMESPACE
        )
        if not reason:
            return
        status = copy.deepcopy(issuer.get("status", {}))
        conditions = status.setdefault("conditions", [])
        set_condition(
            conditions,
            "Ready",
            "True" if signer else "False",
            reason,
            message,
            extra={"observedGeneration": issuer["metadata"].get("generation", 1)},
        )
        write_status(self.store, key, issuer, status)

    def _issuer_for(self, cert: Obj) -> tuple[_Signer | None, str]:
        ref = cert.get("spec", {}).get("issuerRef", {})
        kind, group, name = (
            ref.get("kind") or "Issuer",
            ref.get("group") or GROUP,
            ref.get("name", ""),
        )
        if group != GROUP or kind not in ("Issuer", "ClusterIssuer"):
            return None, f"Waiting for the {kind}.{group} issuer (not run by the lab)"
        ns = cert["metadata"]["namespace"]
        key, issuer_ns = (ISSUERS, ns) if kind == "Issuer" else (CLUSTERISSUERS, "")
        issuer = self.store.find(key, issuer_ns, name)
        if issuer is None:
            return None, f'Referenced "{kind}" not found: {key.resource}.{GROUP} "{name}" not found'
        signer, _, message = self._signer(
            issuer, ns if kind == "Issuer" else CLUSTER_RESOURCE_NAMESPACE
        )
        if signer is None:
            return None, f"Referenced issuer does not have a Ready status condition: {message}"
        return signer, ""

    # ---- certificates ------------------------------------------------------------------

    def sync_certificate(self, ns: str, name: str) -> None:
        cert = self.store.find(CERTIFICATES, ns, name)
        if cert is None or cert["metadata"].get("deletionTimestamp"):
            return
        spec = cert.get("spec", {})
        if not spec.get("secretName"):
            return
        now = datetime.now(UTC)
        try:
            duration, renew_before = durations(spec)
        except ValueError as exc:
            self._not_ready(cert, "InvalidDuration", str(exc), issuing=False)
            return
        reason, message = self._issuance_reason(cert, now)
        if reason is None:
            self._settled(cert, now, renew_before)
            return
        signer, why = self._issuer_for(cert)
        if signer is None:
            self._not_ready(cert, reason, f"{message}; {why}", issuing=True)
            return
        self._issue(cert, signer, now, duration, renew_before)

    def _issuance_reason(self, cert: Obj, now: datetime) -> tuple[str | None, str]:
        """Why the Certificate must be (re-)issued now, like cert-manager's trigger policies."""
        issuing = condition(cert, "Issuing")
        if issuing and issuing["status"] == "True":
            return issuing.get("reason") or "ManuallyTriggered", issuing.get("message", "")
        spec, meta = cert["spec"], cert["metadata"]
        secret = self.store.find(SECRETS, meta["namespace"], spec["secretName"])
        if secret is None:
            return "DoesNotExist", "Issuing certificate as Secret does not exist"
        data = secret.get("data", {})
        if not data.get("tls.crt") or not data.get("tls.key"):
            return "MissingData", "Issuing certificate as Secret does not contain a certificate"
        try:
            leaf = x509.load_pem_x509_certificates(_unb64(data["tls.crt"]))[0]
        except ValueError:
            return (
                "InvalidCertificate",
                "Issuing certificate as Secret contains an invalid certificate",
            )
        ref = spec.get("issuerRef", {})
        annotations = secret["metadata"].get("annotations", {})
        if annotations.get("cert-manager.io/issuer-name", ref.get("name")) != ref.get("name") or (
            annotations.get("cert-manager.io/issuer-kind", ref.get("kind") or "Issuer")
            != (ref.get("kind") or "Issuer")
        ):
            return (
                "IncorrectIssuer",
                "Issuing certificate as Secret was previously issued by "
                f"{annotations.get('cert-manager.io/issuer-kind')}.{GROUP}/"
                f"{annotations.get('cert-manager.io/issuer-name')}",
            )
        if _names(leaf) != _wanted_names(spec):
            return (
                "SecretMismatch",
                "Issuing certificate as Secret does not match the Certificate's spec",
            )
        not_after = leaf.not_valid_after_utc
        if not_after <= now:
            return "Expired", f"Certificate expired on {_http_date(not_after)}"
        _, renew_before = durations(spec)
        renewal = _parse_iso(cert.get("status", {}).get("renewalTime")) or (
            not_after - renew_before
        )
        if renewal <= now:
            return (
                "Renewing",
                f"Renewing certificate as renewal was scheduled at {_http_date(renewal)}",
            )
        return None, ""

    def _settled(self, cert: Obj, now: datetime, renew_before: timedelta) -> None:
        """Up to date: Ready=True, the validity read from its Secret when status lacks it
        (a Certificate adopting an existing Secret), and a timer for its renewal time."""
        status = copy.deepcopy(cert.get("status", {}))
        if "notAfter" not in status:
            secret = self.store.get(
                SECRETS, cert["metadata"]["namespace"], cert["spec"]["secretName"]
            )
            leaf = x509.load_pem_x509_certificates(_unb64(secret["data"]["tls.crt"]))[0]
            status.update(
                notBefore=_iso(leaf.not_valid_before_utc),
                notAfter=_iso(leaf.not_valid_after_utc),
                renewalTime=_iso(leaf.not_valid_after_utc - renew_before),
            )
        conditions = status.setdefault("conditions", [])
        generation = cert["metadata"].get("generation", 1)
        set_condition(
            conditions,
            "Ready",
            "True",
            "Ready",
            _READY_MESSAGE,
            extra={"observedGeneration": generation},
        )
        write_status(self.store, CERTIFICATES, cert, status)
        self._arm(cert, now)

    def _arm(self, cert: Obj, now: datetime) -> None:
        ns, name = cert["metadata"]["namespace"], cert["metadata"]["name"]
        status = self.store.get(CERTIFICATES, ns, name).get("status", {})
        due = [
            t
            for t in (_parse_iso(status.get("renewalTime")), _parse_iso(status.get("notAfter")))
            if t
        ]
        if due:
            delay = max((min(due) - now).total_seconds(), 0.0) + 0.01
            self.timers.later(("renew", ns, name), delay, lambda: self.sync_certificate(ns, name))

    def _not_ready(self, cert: Obj, reason: str, message: str, *, issuing: bool) -> None:
        status = copy.deepcopy(cert.get("status", {}))
        conditions = status.setdefault("conditions", [])
        generation = cert["metadata"].get("generation", 1)
        not_after = _parse_iso(status.get("notAfter"))
        ready_reason = reason
        if not_after and not_after <= datetime.now(UTC):
            ready_reason, message = (
                "Expired",
                f"Certificate expired on {_http_date(not_after)}; {message}",
            )
        set_condition(
            conditions,
            "Ready",
            "False",
            ready_reason,
            message,
            extra={"observedGeneration": generation},
        )
        if issuing:
            set_condition(
                conditions,
                "Issuing",
                "True",
                reason,
                message,
                extra={"observedGeneration": generation},
            )
        write_status(self.store, CERTIFICATES, cert, status)

    def _issue(
        self,
        cert: Obj,
        signer: _Signer,
        now: datetime,
        duration: timedelta,
        renew_before: timedelta,
    ) -> None:
        spec, meta = cert["spec"], cert["metadata"]
        ns = meta["namespace"]
        dns, ips = list(spec.get("dnsNames", [])), list(spec.get("ipAddresses", []))
        not_after = (now + duration).replace(microsecond=0)
        try:
            keypair = pki.issue(
                signer.keypair,
                common_name=spec.get("commonName", ""),
                not_after=not_after,
                not_before=now.replace(microsecond=0),
                dns_names=dns,
                ip_addresses=ips,
                is_ca=bool(spec.get("isCA")),
                usages=_usages(spec),
            )
        except ValueError as exc:
            self._not_ready(
                cert,
                "Failed",
                f"The certificate request has failed to complete: {exc}",
                issuing=True,
            )
            return
        ca_pem = signer.keypair.cert_pem if signer.keypair else keypair.cert_pem
        chain = keypair.cert_pem + (signer.keypair.cert_pem if signer.keypair else b"")
        self._write_secret(cert, chain, keypair.key_pem, ca_pem)
        revision = int(cert.get("status", {}).get("revision", 0)) + 1
        self._record_request(cert, revision, keypair.cert_pem, ca_pem)
        fresh = self.store.get(CERTIFICATES, ns, meta["name"])
        status = copy.deepcopy(fresh.get("status", {}))
        status.update(
            notBefore=_iso(now),
            notAfter=_iso(not_after),
            renewalTime=_iso(not_after - renew_before),
            revision=revision,
        )
        for gone in ("lastFailureTime", "failedIssuanceAttempts", "nextPrivateKeySecretName"):
            status.pop(gone, None)
        conditions = [c for c in status.get("conditions", []) if c["type"] != "Issuing"]
        set_condition(
            conditions,
            "Ready",
            "True",
            "Ready",
            _READY_MESSAGE,
            extra={"observedGeneration": fresh["metadata"].get("generation", 1)},
        )
        status["conditions"] = conditions
        write_status(self.store, CERTIFICATES, fresh, status)
        self._arm(fresh, now)

    def _write_secret(self, cert: Obj, chain: bytes, key_pem: bytes, ca_pem: bytes) -> None:
        wanted = certificate_secret(cert, chain, key_pem, ca_pem)
        meta = wanted["metadata"]
        current = self.store.find(SECRETS, meta["namespace"], meta["name"])
        if current is None:
            self.store.create(SECRETS, wanted)
            return
        secret = copy.deepcopy(current)
        secret["metadata"].setdefault("annotations", {}).update(meta["annotations"])
        secret["metadata"].setdefault("labels", {}).update(meta["labels"])
        secret["data"] = {**secret.get("data", {}), **wanted["data"]}
        secret.pop("stringData", None)
        self.store.update(SECRETS, secret)

    def _record_request(self, cert: Obj, revision: int, leaf_pem: bytes, ca_pem: bytes) -> None:
        """The CertificateRequest of this issuance (earlier revisions are pruned)."""
        meta, spec = cert["metadata"], cert["spec"]
        ns = meta["namespace"]
        for old in self.store.list(CERTIFICATEREQUESTS, ns):
            if any(r.get("uid") == meta["uid"] for r in old["metadata"].get("ownerReferences", [])):
                self.store.delete(CERTIFICATEREQUESTS, ns, old["metadata"]["name"])
        now = now_iso()
        request: Obj = {
            "apiVersion": f"{GROUP}/v1",
            "kind": "CertificateRequest",
            "metadata": {
                "name": f"{meta['name']}-{revision}",
                "namespace": ns,
                "annotations": {
                    "cert-manager.io/certificate-name": meta["name"],
                    "cert-manager.io/certificate-revision": str(revision),
                    "cert-manager.io/private-key-secret-name": spec["secretName"],
                },
                "ownerReferences": [owner_ref(cert, "Certificate", f"{GROUP}/v1")],
            },
            "spec": {
                "issuerRef": spec.get("issuerRef", {}),
                "duration": spec.get("duration", "2160h0m0s"),
                "isCA": bool(spec.get("isCA")),
                "usages": spec.get("usages", ["digital signature", "key encipherment"]),
                "username": "system:serviceaccount:cert-manager:cert-manager",
            },
        }
        try:
            created = self.store.create(CERTIFICATEREQUESTS, request)
        except ApiError:
            return  # a stale name from a restored store: the Certificate is what counts
        status = {
            "certificate": _b64(leaf_pem),
            "ca": _b64(ca_pem),
            "conditions": [
                {
                    "type": "Approved",
                    "status": "True",
                    "reason": "cert-manager.io",
                    "message": "Certificate request has been approved by cert-manager.io",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Issued",
                    "message": "Certificate fetched from issuer successfully",
                    "lastTransitionTime": now,
                },
            ],
        }
        write_status(self.store, CERTIFICATEREQUESTS, created, status)

    # ---- cainjector --------------------------------------------------------------------

    def injected_bundle(self, webhook: Obj) -> str | None:
        """The caBundle (base64 PEM) cainjector would set, or None when not annotated or
        the source does not exist yet."""
        annotations = webhook["metadata"].get("annotations", {})
        if annotations.get(INJECT_APISERVER) == "true":
            return _b64(self.apiserver_ca.encode()) if self.apiserver_ca else None
        secret: Obj | None = None
        if INJECT_FROM in annotations:
            ns, _, name = annotations[INJECT_FROM].partition("/")
            cert = self.store.find(CERTIFICATES, ns, name)
            if cert is not None:
                secret = self.store.find(SECRETS, ns, cert.get("spec", {}).get("secretName", ""))
        elif INJECT_FROM_SECRET in annotations:
            ns, _, name = annotations[INJECT_FROM_SECRET].partition("/")
            secret = self.store.find(SECRETS, ns, name)
        bundle = (secret or {}).get("data", {}).get("ca.crt")
        return str(bundle) if bundle else None

    def sync_webhooks(self) -> None:
        for key in WEBHOOK_KEYS:
            for webhook in self.store.list(key):
                bundle = self.injected_bundle(webhook)
                if bundle is None:
                    continue
                new = copy.deepcopy(webhook)
                for hook in new.get("webhooks", []):
                    hook.setdefault("clientConfig", {})["caBundle"] = bundle
                if new != webhook:
                    self.store.update(key, new)


def certificate_secret(cert: Obj, chain: bytes, key_pem: bytes, ca_pem: bytes) -> Obj:
    """The kubernetes.io/tls Secret cert-manager writes for `cert`."""
    spec, meta = cert["spec"], cert["metadata"]
    ref = spec.get("issuerRef", {})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": spec["secretName"],
            "namespace": meta["namespace"],
            "annotations": {
                "cert-manager.io/certificate-name": meta["name"],
                "cert-manager.io/issuer-name": ref.get("name", ""),
                "cert-manager.io/issuer-kind": ref.get("kind") or "Issuer",
                "cert-manager.io/issuer-group": ref.get("group") or GROUP,
                "cert-manager.io/common-name": spec.get("commonName", ""),
                "cert-manager.io/alt-names": ",".join(spec.get("dnsNames", [])),
                "cert-manager.io/ip-sans": ",".join(spec.get("ipAddresses", [])),
                "cert-manager.io/uri-sans": "",
            },
            "labels": {"controller.cert-manager.io/fao": "true"},
        },
        "data": {"tls.crt": _b64(chain), "tls.key": _b64(key_pem), "ca.crt": _b64(ca_pem)},
    }


LAB_ISSUER = "lab-ca"


def seed_certificate(
    store: ObjectStore,
    *,
    namespace: str,
    name: str,
    days: float,
    secret_name: str | None = None,
    duration: str | None = None,
    renew_before: str | None = None,
    dns_names: list[str] | None = None,
) -> Obj:
    """A Certificate issued earlier by ClusterIssuer `lab-ca` (created with its CA Secret
    in `cert-manager` when absent), `days` from expiry (negative: expired). The namespace
    is created when missing. ValueError for a taken name or a bad duration. The controller
    then treats it like any other: it renews at once when its renewal time has passed."""
    if store.find(CERTIFICATES, namespace, name) is not None:
        raise ValueError(f'certificate "{name}" already exists in namespace {namespace}')
    spec: Obj = {
        "secretName": secret_name or f"{name}-tls",
        "dnsNames": dns_names or [f"{name}.{namespace}.svc"],
        "issuerRef": {"name": LAB_ISSUER, "kind": "ClusterIssuer", "group": GROUP},
    }
    if duration:
        spec["duration"] = duration
    if renew_before:
        spec["renewBefore"] = renew_before
    length, renew = durations(spec)  # ValueError for a malformed duration
    ca = _lab_issuer(store)
    _ensure_namespace(store, namespace)
    not_after = pki.not_after_in(days)
    not_before = not_after - length
    keypair = pki.issue(
        ca,
        common_name="",
        not_after=not_after,
        not_before=not_before,
        dns_names=spec["dnsNames"],
    )
    cert: Obj = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    secret = certificate_secret(cert, keypair.cert_pem + ca.cert_pem, keypair.key_pem, ca.cert_pem)
    if store.find(SECRETS, namespace, spec["secretName"]) is not None:
        store.delete(SECRETS, namespace, spec["secretName"])
    store.create(SECRETS, secret)
    created = store.create(CERTIFICATES, cert)
    now = datetime.now(UTC)
    expired = not_after <= now
    ready: Obj = {
        "type": "Ready",
        "status": "False" if expired else "True",
        "reason": "Expired" if expired else "Ready",
        "message": f"Certificate expired on {_http_date(not_after)}" if expired else _READY_MESSAGE,
        "lastTransitionTime": _iso(not_before),
        "observedGeneration": 1,
    }
    status = {
        "notBefore": _iso(not_before),
        "notAfter": _iso(not_after),
        "renewalTime": _iso(not_after - renew),
        "revision": 1,
        "conditions": [ready],
    }
    write_status(store, CERTIFICATES, created, status)
    return store.get(CERTIFICATES, namespace, name)


def _ensure_namespace(store: ObjectStore, name: str) -> None:
    if store.find(NAMESPACES, "", name) is None:
        store.create(
            NAMESPACES,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )


def _lab_issuer(store: ObjectStore) -> pki.KeyPair:
    """The CA behind ClusterIssuer `lab-ca`, created on first use."""
    secret = store.find(SECRETS, CLUSTER_RESOURCE_NAMESPACE, LAB_ISSUER)
    if secret is not None:
        data = secret.get("data", {})
        return pki.signer_of(_unb64(data.get("tls.crt")), _unb64(data.get("tls.key")))
    _ensure_namespace(store, CLUSTER_RESOURCE_NAMESPACE)
    ca = pki.create_ca(common_name=LAB_ISSUER)
    store.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": LAB_ISSUER, "namespace": CLUSTER_RESOURCE_NAMESPACE},
            "data": {"tls.crt": _b64(ca.cert_pem), "tls.key": _b64(ca.key_pem)},
        },
    )
    if store.find(CLUSTERISSUERS, "", LAB_ISSUER) is None:
        store.create(
            CLUSTERISSUERS,
            {
                "apiVersion": f"{GROUP}/v1",
                "kind": "ClusterIssuer",
                "metadata": {"name": LAB_ISSUER},
                "spec": {"ca": {"secretName": LAB_ISSUER}},
            },
        )
    return ca


def _usages(spec: Obj) -> tuple[x509.ObjectIdentifier, ...]:
    usages = spec.get("usages") or ["digital signature", "key encipherment", "server auth"]
    out = []
    if "server auth" in usages:
        out.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if "client auth" in usages:
        out.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return tuple(out)


def _names(leaf: x509.Certificate) -> tuple[frozenset[str], frozenset[str]]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    return (
        frozenset(san.get_values_for_type(x509.DNSName)),
        frozenset(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    )


def _wanted_names(spec: Obj) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(spec.get("dnsNames", [])), frozenset(spec.get("ipAddresses", []))
