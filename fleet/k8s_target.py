"""The target of a Kubernetes upgrade rollout (Cluster API), and what it checks at plan time."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fleet.models import ClusterRecord
from fleet.targets import Target
from fleet.versions import VersionError, parse_version, upgrade_problem


class K8sTarget(Target):
    """Upgrade Kubernetes (control plane, then workers) through Cluster API."""

    kind: Literal["k8s"] = "k8s"
    version: str = Field(
        description="Target Kubernetes version, e.g. v1.31.2.", json_schema_extra={"cli": "--to"}
    )

    default_cluster_timeout: ClassVar[float] = 1800

    def describe(self) -> str:
        return f"Kubernetes {self.version}"

    def problems(self) -> list[str]:
        try:
            parse_version(self.version)
        except VersionError as exc:
            return [str(exc)]
        return []

    def cluster_problem(self, record: ClusterRecord) -> str:
        """A minor-version skip or a downgrade against the version the inventory knows."""
        try:
            return upgrade_problem(record.version, self.version)
        except VersionError as exc:
            return str(exc)

    def known_version(self, record_version: str) -> str:
        return record_version
