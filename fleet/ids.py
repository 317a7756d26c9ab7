"""Workflow ids and the names that become part of them.

Ids carry meaning (`cluster:<name>`, `onboard:<name>`), so a cluster name must be usable
inside an id, a Kubernetes label value and a search attribute: a DNS-1123 label.
"""

from __future__ import annotations

import re

HEALTH_SCHEDULE_ID = "flotilla-health-sweep"
CERT_SCAN_SCHEDULE_ID = "flotilla-cert-scan"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def cluster_id(name: str) -> str:
    return f"cluster:{name}"


def identity_id(uid: str) -> str:
    """The `ClusterIdentity` run that admits one record per real cluster (kube-system UID)."""
    return f"cluster-uid:{uid}"


def onboard_id(name: str) -> str:
    return f"onboard:{name}"


def offboard_id(name: str) -> str:
    return f"offboard:{name}"


def cluster_name_error(name: str) -> str | None:
    """Why `name` cannot name a cluster, or None when it can."""
    if not _NAME_RE.match(name):
        return (
            f"bad cluster name {name!r}: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return None


def labels_error(labels: dict[str, str]) -> str | None:
    """Why `labels` are not valid Kubernetes labels, or None when they are."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME_RE.match(name) or (prefix and not _LABEL_PREFIX_RE.match(prefix)):
            return f"bad label key {key!r}: use [prefix/]name with letters, digits, '-', '_', '.'"
        if not _LABEL_VALUE_RE.match(value):
            return (
                f"bad value {value!r} for label {key!r}: at most 63 letters, digits, "
                "'-', '_', '.', starting and ending with a letter or digit"
            )
    return None
