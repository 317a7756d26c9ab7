"""A real Git repository for sync tests: examples/baseline-repo confined to a test suite's
clusters, committed with the git binary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from activities.kube import api_client
from activities.manifests import call
from fleet.models import CredentialRef

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "baseline-repo"


class GitRepo:
    def __init__(self, path: Path, suite: str, waves: str = "canary:1, rest") -> None:
        self.path, self.suite = path, suite
        shutil.copytree(EXAMPLE, path)
        self.settings(waves)
        self.git("init", "-q", "-b", "main")
        self.commit("baseline")

    def settings(self, waves: str) -> None:
        (self.path / "flotilla.yaml").write_text(
            f"selector: suite={self.suite}\nwaves: [{waves}]\nmax_concurrent: 10\n"
            "prune_threshold: 25\n"
        )

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=Test", "-c", "user.email=t@example.com", *args],
            cwd=self.path,
            capture_output=True,
            check=True,
            text=True,
        )
        return done.stdout.strip()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def write(self, relative: str, text: str) -> None:
        (self.path / relative).write_text(text)

    def edit(self, relative: str, old: str, new: str) -> None:
        file = self.path / relative
        text = file.read_text()
        assert old in text, (relative, old)
        file.write_text(text.replace(old, new, 1))

    def remove(self, relative: str) -> None:
        (self.path / relative).unlink()


def cluster_api(lab: Any, name: str) -> k8s.ApiClient:
    return api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{name}"))


def read(lab: Any, name: str, path: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = call(cluster_api(lab, name), "GET", path)
        return obj
    except k8s.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise


QUOTA_A = "/api/v1/namespaces/team-a/resourcequotas/compute"
QUOTA_C = "/api/v1/namespaces/team-c/resourcequotas/compute"
NETPOL_A = "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/default-deny"
WEB = "/apis/apps/v1/namespaces/team-a/deployments/web"
