"""The lab's kubeconfig: one context `lab-<name>` per cluster (management included),
cluster and user entries of the same name, each cluster's current trust bundle embedded,
written 0600. `for_cluster` is the kubeconfig Cluster API keeps in `<cluster>-kubeconfig`.

Tests and benches use this file as the hub's kubeconfig, which Flotilla rewrites during a
CA rotation: every write here takes the writers' lock Flotilla takes (an exclusive flock
on `.<name>.lock` next to the file), and a cluster's new trust is written into its own
entry only (read-modify-write), so neither side loses the other's change."""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from lab.cluster import Cluster


def _trust(cluster: Cluster, default: bytes | None) -> str:
    pem = cluster.tls.trust_pem if cluster.tls is not None else default
    assert pem is not None, f"cluster {cluster.name} has no trust bundle"
    return base64.b64encode(pem).decode()


def render(
    clusters: Iterable[Cluster], *, current: str, ca_pem: bytes | None = None
) -> dict[str, object]:
    """`ca_pem` serves clusters without their own TLS."""
    entries = list(clusters)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": current,
        "clusters": [
            {
                "name": c.context,
                "cluster": {"server": c.server, "certificate-authority-data": _trust(c, ca_pem)},
            }
            for c in entries
        ],
        "users": [{"name": c.context, "user": {"token": c.token}} for c in entries],
        "contexts": [
            {"name": c.context, "context": {"cluster": c.context, "user": c.context}}
            for c in entries
        ],
    }


def for_cluster(cluster: Cluster) -> str:
    """The admin kubeconfig of one cluster, named as Cluster API names it."""
    user, context = f"{cluster.name}-admin", f"{cluster.name}-admin@{cluster.name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": context,
        "clusters": [
            {
                "name": cluster.name,
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": _trust(cluster, None),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": cluster.token}}],
        "contexts": [{"name": context, "context": {"cluster": cluster.name, "user": user}}],
    }
    return json.dumps(config, indent=2)  # JSON is YAML: what kubeconfig loaders read


def write_private(path: Path, text: str) -> None:
    """Writes `text` atomically with mode 0600 (it holds tokens or keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The kubeconfig writers' lock (see the module docstring); released on close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write(
    path: Path, clusters: Iterable[Cluster], *, current: str, ca_pem: bytes | None = None
) -> Path:
    config = render(clusters, current=current, ca_pem=ca_pem)
    text = yaml.dump(config, Dumper=yaml.CSafeDumper, sort_keys=False)
    with _locked(path):
        write_private(path, text)
    return path


def set_trust(path: Path, cluster: Cluster) -> None:
    """Writes `cluster`'s current trust bundle into its own entry, leaving every other
    entry as the file has it (a rotation may be changing them)."""
    with _locked(path):
        config = yaml.load(path.read_text(), Loader=yaml.CSafeLoader) or {}
        for item in config.get("clusters") or []:
            if item.get("name") == cluster.context:
                item.setdefault("cluster", {})["certificate-authority-data"] = _trust(cluster, None)
        write_private(path, yaml.dump(config, Dumper=yaml.CSafeDumper, sort_keys=False))
