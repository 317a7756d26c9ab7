"""The kubeconfig resolver: the documented order and kubectl's merge of a list."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from fleet import kubeconfig
from fleet.config import Settings


def write(path: Path, current: str = "", **lists: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "current-context": current, **lists}))
    return path


def context(name: str, cluster: str, user: str) -> dict:
    return {"name": name, "context": {"cluster": cluster, "user": user}}


def test_first_file_to_define_a_name_wins(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a",
        contexts=[context("shared", "ca", "ua")],
        clusters=[
            {"name": "ca", "cluster": {"server": "https://a", "certificate-authority": "ca.pem"}}
        ],
        users=[{"name": "u", "user": {"token": "from-a"}}],
    )
    b = write(
        tmp_path / "b",
        current="only-b",
        contexts=[context("shared", "cb", "ub"), context("only-b", "cb", "u")],
        clusters=[{"name": "ca", "cluster": {"server": "https://b"}}],
        users=[{"name": "u", "user": {"token": "from-b"}}],
    )
    merged = kubeconfig.load(os.pathsep.join([str(a), str(tmp_path / "missing"), str(b)]))
    assert kubeconfig.contexts(merged) == ["shared", "only-b"]
    assert merged["contexts"][0]["context"]["cluster"] == "ca"
    assert merged["clusters"] == [
        {
            "name": "ca",
            "cluster": {"server": "https://a", "certificate-authority": str(tmp_path / "ca.pem")},
        }
    ]
    assert [u["user"]["token"] for u in merged["users"]] == ["from-a"]
    assert merged["current-context"] == "only-b"  # the first file that sets one


def test_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match="does not exist"):
        kubeconfig.load(os.pathsep.join([str(tmp_path / "x"), str(tmp_path / "y")]))
    (tmp_path / "bad").write_text("{{{")
    with pytest.raises(kubeconfig.KubeconfigError, match="cannot read"):
        kubeconfig.load(str(tmp_path / "bad"))
    (tmp_path / "list").write_text("- 1\n")
    with pytest.raises(kubeconfig.KubeconfigError, match="not a kubeconfig"):
        kubeconfig.load(str(tmp_path / "list"))


def test_default_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "k1:k2")
    assert kubeconfig.default_source(Settings(kubeconfig="f", state_dir=tmp_path)) == "f"
    assert kubeconfig.default_source(Settings(state_dir=tmp_path)) == "k1:k2"
    lab = tmp_path / "lab" / "kubeconfig"
    lab.parent.mkdir()
    lab.write_text("{}")
    assert kubeconfig.default_source(Settings(state_dir=tmp_path)) == str(lab)
    monkeypatch.delenv("KUBECONFIG")
    assert kubeconfig.default_source(Settings(state_dir=tmp_path / "none")) == "~/.kube/config"
