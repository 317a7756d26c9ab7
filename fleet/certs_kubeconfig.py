"""The hub side of a cluster's certificates: what its kubeconfig context trusts and
presents, and the one writer that changes the CA data Flotilla reads.

Reads go through fleet/kubeconfig.py, so they see exactly what the worker's API clients
see (a `:` list merged as kubectl merges it). `set_cluster_ca` rewrites the file that
defines the context's cluster entry (the first file of the list that names it, the one
the merge takes it from): under an exclusive flock (threads and processes), as an atomic
replace keeping the file's mode, and not at all when the data is already there. Nothing
here logs or returns key material.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet import kubeconfig

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class HubConfigError(ValueError):
    """The context or its entries are missing from the kubeconfig."""


@dataclass(frozen=True)
class HubView:
    """One context as the hub uses it; PEM bytes are public certificates only."""

    context: str
    cluster_entry: str
    server: str
    ca_pem: bytes  # empty when the context trusts the system roots
    client_cert_pem: bytes  # empty for token users
    insecure: bool


def _entry(config: dict[str, dict[str, dict[str, Any]]], key: str, name: str) -> dict[str, Any]:
    item = config[key].get(name)
    if item is None:
        raise HubConfigError(f"no {key[:-1]} {name!r} in the kubeconfig")
    return dict(item.get(key[:-1]) or {})


def _data(entry: dict[str, Any], inline: str, path: str) -> bytes:
    if entry.get(inline):
        return base64.b64decode(entry[inline])
    if entry.get(path):
        try:
            return Path(entry[path]).read_bytes()
        except OSError as exc:
            raise HubConfigError(f"cannot read {entry[path]}: {exc.strerror}") from None
    return b""


def view(source: str, context: str) -> HubView:
    """What `context` of the kubeconfig `source` trusts and presents."""
    config = kubeconfig.entries(source)
    ctx = _entry(config, "contexts", context)
    cluster = _entry(config, "clusters", str(ctx.get("cluster", "")))
    user = _entry(config, "users", str(ctx.get("user", ""))) if ctx.get("user") else {}
    return HubView(
        context=context,
        cluster_entry=str(ctx.get("cluster", "")),
        server=str(cluster.get("server", "")),
        ca_pem=_data(cluster, "certificate-authority-data", "certificate-authority"),
        client_cert_pem=_data(user, "client-certificate-data", "client-certificate"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def set_cluster_ca(
    source: str, context: str, ca_pem: bytes, *, waiting: Callable[[], None] | None = None
) -> bool:
    """Makes the cluster entry of `context` trust exactly `ca_pem` (inline data); True if
    the file changed. `waiting` is called about every second while another writer holds
    the lock (an activity heartbeats). Raises HubConfigError when no file of `source`
    defines the entry."""
    entry_name = view(source, context).cluster_entry
    wanted = base64.b64encode(ca_pem).decode()
    for path in kubeconfig.files(source):
        if not path.exists():
            continue
        with _locked(path, waiting):
            document = yaml.load(path.read_text(), Loader=_LOADER) or {}
            for item in document.get("clusters") or []:
                if item.get("name") != entry_name:
                    continue
                cluster = item.setdefault("cluster", {})
                if cluster.get("certificate-authority-data") == wanted:
                    return False
                cluster.pop("certificate-authority", None)
                cluster["certificate-authority-data"] = wanted
                _replace(path, yaml.dump(document, Dumper=_DUMPER, sort_keys=False))
                return True
    raise HubConfigError(f"no file of {source} defines cluster {entry_name!r}")


@contextmanager
def _locked(path: Path, waiting: Callable[[], None] | None) -> Iterator[None]:
    """An exclusive `flock` on the sidecar file `.<name>.lock` (the atomic replace would
    drop a lock on the file itself). A lock belongs to its open file, so this excludes
    other threads as well as other processes, and closing the file releases it whatever
    interrupts the holder (a cancelled activity's thread gets an exception at any point:
    a lock that needs an explicit release could stay taken for good)."""
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        for attempt in itertools.count(1):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waiting is not None and attempt % 20 == 0:
                    waiting()
                time.sleep(0.05)
        yield


def _replace(path: Path, text: str) -> None:
    """Atomic replace keeping the file's mode (a kubeconfig is 0600)."""
    mode = path.stat().st_mode & 0o777
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
