"""Lab-backed helpers for the core integration tests: per-test clusters and credentials."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tests.workflows.core_support import unique

if TYPE_CHECKING:
    from lab.testing import LabProcess


@contextlib.contextmanager
def lab_cluster(lab: LabProcess, **labels: str) -> Iterator[str]:
    """A workload cluster added to the lab for one test, removed afterwards."""
    name = unique("t")
    lab.admin.add_cluster(name, labels or {"env": "dev", "region": "eu", "provider": "aws"})
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            lab.admin.remove_cluster(name)


def limited_kubeconfig(lab: LabProcess, cluster: str, token: str, path: Path) -> str:
    """Writes a kubeconfig with one context `limited-<cluster>` using `token`; returns
    the context name."""
    config = yaml.safe_load(Path(lab.kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == f"lab-{cluster}")
    name = f"limited-{cluster}"
    config["users"].append({"name": name, "user": {"token": token}})
    config["contexts"].append(
        {"name": name, "context": {"cluster": context["context"]["cluster"], "user": name}}
    )
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return name
