"""The hub's kubeconfig as the certificate code reads and writes it: the resolver's merge
rules, the file that defines the entry, atomic idempotent writes, no lost update."""

from __future__ import annotations

import base64
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from fleet import certs_kubeconfig, kubeconfig
from tests.certs.pki import ca, pem


def write(path: Path, names: list[str], ca_pem: bytes) -> Path:
    data = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": n,
                "cluster": {"server": "https://127.0.0.1:1", "certificate-authority-data": data},
            }
            for n in names
        ],
        "users": [{"name": n, "user": {"token": f"secret-{n}"}} for n in names],
        "contexts": [{"name": f"ctx-{n}", "context": {"cluster": n, "user": n}} for n in names],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_view_and_set_in_the_defining_file(tmp_path: Path) -> None:
    old, new = pem(ca("old")[0]), pem(ca("new")[0])
    a = write(tmp_path / "a", ["a1"], old)
    b = write(tmp_path / "b", ["b1", "b2"], old)
    source = os.pathsep.join([str(a), str(b)])
    view = certs_kubeconfig.view(source, "ctx-b2")
    assert view.ca_pem == old and view.client_cert_pem == b"" and view.cluster_entry == "b2"
    before = a.read_bytes()
    assert certs_kubeconfig.set_cluster_ca(source, "ctx-b2", old + new)
    assert a.read_bytes() == before  # only the file that defines the entry changes
    assert certs_kubeconfig.view(source, "ctx-b2").ca_pem == old + new
    assert certs_kubeconfig.view(source, "ctx-b1").ca_pem == old
    assert stat.S_IMODE(b.stat().st_mode) == 0o600
    # The worker's resolver sees it (its cache is keyed by mtime).
    merged = kubeconfig.load(source)
    entry = next(c for c in merged["clusters"] if c["name"] == "b2")
    assert base64.b64decode(entry["cluster"]["certificate-authority-data"]) == old + new
    mtime = b.stat().st_mtime_ns
    assert not certs_kubeconfig.set_cluster_ca(source, "ctx-b2", old + new)  # idempotent
    assert b.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".*.tmp"))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    old = pem(ca("old")[0])
    names = [f"c{i}" for i in range(10)]
    path = write(tmp_path / "config", names, old)
    bundles = {n: old + pem(ca(n)[0]) for n in names}
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: certs_kubeconfig.set_cluster_ca(str(path), f"ctx-{n}", bundles[n]), names
            )
        )
    for n in names:
        assert certs_kubeconfig.view(str(path), f"ctx-{n}").ca_pem == bundles[n]
    assert "secret-c0" in path.read_text()  # users untouched


def test_unknown_context(tmp_path: Path) -> None:
    path = write(tmp_path / "config", ["a"], pem(ca()[0]))
    with pytest.raises(certs_kubeconfig.HubConfigError, match="no context 'nope'"):
        certs_kubeconfig.set_cluster_ca(str(path), "nope", b"")
