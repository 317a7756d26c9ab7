"""The lab's kubeconfig: one context `lab-<name>` per cluster (management included),
cluster and user entries of the same name, the lab CA embedded, written 0600."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from lab.cluster import Cluster


def render(clusters: Iterable[Cluster], *, ca_pem: bytes, current: str) -> dict[str, object]:
    ca = base64.b64encode(ca_pem).decode()
    entries = list(clusters)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": current,
        "clusters": [
            {"name": c.context, "cluster": {"server": c.server, "certificate-authority-data": ca}}
            for c in entries
        ],
        "users": [{"name": c.context, "user": {"token": c.token}} for c in entries],
        "contexts": [
            {"name": c.context, "context": {"cluster": c.context, "user": c.context}}
            for c in entries
        ],
    }


def write_private(path: Path, text: str) -> None:
    """Writes `text` atomically with mode 0600 (it holds tokens or keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write(path: Path, clusters: Iterable[Cluster], *, ca_pem: bytes, current: str) -> Path:
    write_private(
        path, yaml.safe_dump(render(clusters, ca_pem=ca_pem, current=current), sort_keys=False)
    )
    return path
