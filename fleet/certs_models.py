"""The certificate records a cluster's inventory entry carries (see fleet/certs.py for
the maths on them). Kept apart from fleet/certs.py so fleet/models.py can hold them
without an import cycle. No key material: names, dates and SHA-256 fingerprints only."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_ALERT_DAYS = 60


class Model(BaseModel):  # as fleet.models.Model
    model_config = ConfigDict(extra="forbid", frozen=False)


class CertSource(StrEnum):
    """Where an expiry was read."""

    SERVING = "apiserver"  # the leaf the API server presents in a TLS handshake
    MACHINE = "capi-machine"  # a control-plane Machine's certificatesExpiryDate (Cluster API)
    CERT_MANAGER = "cert-manager"  # a cert-manager Certificate's status.notAfter
    TLS_SECRET = "tls-secret"  # the tls.crt of a kubernetes.io/tls Secret
    HUB_CA = "hub-ca"  # certificate-authority-data of the hub's kubeconfig
    HUB_CLIENT = "hub-client"  # client-certificate-data of the hub's kubeconfig


class CertStatus(StrEnum):
    """A cluster's certificate standing, as the record and `FlotillaCertStatus` show it."""

    OK = "ok"
    EXPIRING = "expiring"  # something expires within the alert threshold
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # never scanned, or nothing could be read


class CertEntry(Model):
    """One certificate found by a scan (no PEM: names, dates and a fingerprint)."""

    source: CertSource
    name: str  # e.g. "Certificate default/web", "Machine fleet/a-cp-1", "https://127.0.0.1:1"
    not_after: datetime
    not_before: datetime | None = None
    subject: str = ""
    issuer: str = ""
    fingerprint: str = ""  # SHA-256 of the DER, hex; "" when only a date is known
    is_ca: bool = False
    # cert-manager: when it will renew on its own, and whether it is Ready.
    renewal_time: datetime | None = None
    ready: bool | None = None

    def label(self) -> str:
        return f"{self.source.value} {self.name}"


class TrustPin(Model):
    """Which CA certificates one consumer trusts (SHA-256 fingerprints)."""

    consumer: str  # "hub kubeconfig", "ConfigMap kube-system/kube-root-ca.crt", ...
    cas: list[str] = Field(default_factory=list)


class CertReport(Model):
    """Everything one scan of one cluster found."""

    cluster: str
    scanned_at: datetime
    reachable: bool = True
    entries: list[CertEntry] = Field(default_factory=list)
    trust: list[TrustPin] = Field(default_factory=list)
    # The CA (fingerprint) that issued the served leaf, as found among the pinned CAs.
    serving_ca: str = ""
    # Whether a handshake verified with the hub's kubeconfig CA data succeeds.
    hub_accepts: bool | None = None
    problems: list[str] = Field(default_factory=list)  # sources that could not be read


class CertSummary(Model):
    """What the cluster record keeps of the last scan."""

    status: CertStatus = CertStatus.UNKNOWN
    soonest: datetime | None = None
    source: str = ""  # the soonest entry's label
    scanned_at: datetime | None = None
    entries: int = 0
    expiring: int = 0  # entries inside the threshold
    problems: int = 0
    alert_seconds: float = DEFAULT_ALERT_DAYS * 86400.0
