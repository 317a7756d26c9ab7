"""Certificates across the fleet: the messages of a scan and the pure maths on them.

A scan reads, per cluster, every place a certificate expiry shows (the API server's served
leaf, Cluster API Machines, cert-manager Certificates, kubernetes.io/tls Secrets, the hub's
kubeconfig) and which CA each trust consumer pins. Nothing here holds key material: a
certificate travels as its expiry, names and SHA-256 fingerprint, never as PEM, and a CA
as its fingerprint. Functions here do no I/O, so workflows and tests use them directly.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pydantic import Field

from fleet.certs_models import (
    DEFAULT_ALERT_DAYS,
    CertEntry,
    CertReport,
    CertSource,
    CertStatus,
    CertSummary,
)
from fleet.durations import format_duration, parse_duration
from fleet.models import Model

MAX_THRESHOLD = 10 * 365 * 86400.0
_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


# --- parsing ----------------------------------------------------------------------------


def parse_threshold(text: str) -> float:
    """Seconds in a threshold like `30d`, `12h`, `90` (seconds); must be above zero and at
    most ten years. Raises ValueError with a sentence for a person."""
    seconds = parse_duration(text)
    if seconds <= 0 or seconds > MAX_THRESHOLD:
        raise ValueError(f"threshold {text!r} must be above 0 and at most 3650d")
    return seconds


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_bundle(data: bytes | str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (base64 of PEM is accepted too, as kubeconfigs and
    caBundle fields carry it); anything unparsable is left out."""
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" not in raw:
        try:
            raw = base64.b64decode(raw, validate=False)
        except ValueError:
            return []
    return [cert for block in _PEM_RE.findall(raw) if (cert := _certificate(block))]


@functools.lru_cache(maxsize=4096)
def _certificate(block: bytes) -> x509.Certificate | None:
    """One PEM block parsed (None: unparsable), cached: a cluster's CA shows in every
    namespace's kube-root-ca.crt and in webhooks, a fleet's CAs in every scan."""
    try:
        return x509.load_pem_x509_certificate(block)
    except ValueError:
        return None


def entry_of(cert: x509.Certificate, *, source: CertSource, name: str) -> CertEntry:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertEntry(
        source=source,
        name=name,
        not_after=cert.not_valid_after_utc,
        not_before=cert.not_valid_before_utc,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint=fingerprint(cert),
        is_ca=is_ca,
    )


def issuer_among(leaf: x509.Certificate, cas: Iterable[x509.Certificate]) -> str:
    """The fingerprint of the CA in `cas` that signed `leaf` ("" when none did)."""
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return fingerprint(ca)
    return ""


# --- expiry maths -----------------------------------------------------------------------


def soonest(entries: Sequence[CertEntry]) -> CertEntry | None:
    """The entry that expires first (ties: the first listed)."""
    return min(entries, key=lambda e: e.not_after, default=None)


def expiring(entries: Sequence[CertEntry], now: datetime, within: float) -> list[CertEntry]:
    """Entries expiring within `within` seconds of `now` (expired ones included), soonest
    first."""
    limit = now + timedelta(seconds=within)
    return sorted((e for e in entries if e.not_after <= limit), key=lambda e: e.not_after)


def status_of(first: datetime | None, now: datetime, alert_seconds: float) -> CertStatus:
    if first is None:
        return CertStatus.UNKNOWN
    if first <= now:
        return CertStatus.EXPIRED
    if first <= now + timedelta(seconds=alert_seconds):
        return CertStatus.EXPIRING
    return CertStatus.OK


def summarize(report: CertReport, alert_seconds: float) -> CertSummary:
    """The record's summary of `report`, judged at the scan's own time."""
    first = soonest(report.entries)
    now = report.scanned_at
    return CertSummary(
        status=status_of(first.not_after if first else None, now, alert_seconds),
        soonest=first.not_after if first else None,
        source=first.label() if first else "",
        scanned_at=now,
        entries=len(report.entries),
        expiring=len(expiring(report.entries, now, alert_seconds)),
        problems=len(report.problems),
        alert_seconds=alert_seconds,
    )


def due(entry: CertEntry, now: datetime, before_seconds: float) -> bool:
    """Whether `entry` should be renewed now: its own renewal time has come, or it expires
    within `before_seconds`."""
    if entry.renewal_time is not None and entry.renewal_time <= now:
        return True
    return entry.not_after <= now + timedelta(seconds=before_seconds)


def remaining(not_after: datetime, now: datetime) -> str:
    """`in 29d`, `in 5h`, `expired 2d ago`, rounded down to the largest whole unit."""
    seconds = (not_after - now).total_seconds()
    span = abs(seconds)
    for size in (86400, 3600, 60):
        if span >= size:
            text = format_duration(int(span // size) * size)
            break
    else:
        text = f"{int(span)}s"
    return f"in {text}" if seconds >= 0 else f"expired {text} ago"


def short(fp: str) -> str:
    """A fingerprint as people compare them: the first 12 hex digits."""
    return fp[:12]


# --- messages of the scan -----------------------------------------------------------------


class CertScanRequest(Model):
    """Scan the clusters named, or those matching `selector` (all when both are empty)."""

    names: list[str] = Field(default_factory=list)
    selector: str = ""
    alert_seconds: float = Field(default=DEFAULT_ALERT_DAYS * 86400.0, gt=0, le=MAX_THRESHOLD)
    chunk: int = Field(default=50, ge=1, le=200)  # clusters per scan activity
    concurrency: int = Field(default=6, ge=1, le=64)  # scan activities at once


class CertScanChunk(Model):
    """One scan activity's clusters, by name (it reads how to reach each from the
    inventory), and the alert threshold their records are judged by."""

    names: list[str]
    alert_seconds: float


class CertReports(Model):
    reports: list[CertReport]


class CertRecordRequest(Model):
    """Record scan reports on their clusters' records, judged against `alert_seconds`."""

    reports: list[CertReport]
    alert_seconds: float


class CertScanResult(Model):
    """What a scan found: each scanned cluster's summary, and what could not be scanned."""

    clusters: dict[str, CertSummary] = Field(default_factory=dict)
    unreachable: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)  # no active record by that name
    failed: dict[str, str] = Field(default_factory=dict)  # cluster -> why not recorded

    def count(self, status: CertStatus) -> int:
        return sum(1 for s in self.clusters.values() if s.status == status)
