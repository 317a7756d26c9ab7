"""The target of an add-on rollout: one container image of a Deployment or DaemonSet."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from fleet.targets import Target

# A Docker image reference: [registry[:port]/]path[:tag][@digest], lower-case path components
# (distribution/reference's grammar, simplified to what a typo breaks).
_IMAGE_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@[a-z0-9]+:[a-fA-F0-9]{32,})?$"
)


class AddonTarget(Target):
    """Set one container's image of a Deployment or DaemonSet."""

    kind: Literal["addon"] = "addon"
    name: str = Field(min_length=1, description="Workload name, e.g. coredns.")
    image: str = Field(
        min_length=1, description="New image, e.g. registry.k8s.io/coredns/coredns:v1.11.3."
    )
    namespace: str = Field(default="kube-system", min_length=1, description="Workload namespace.")
    workload: Literal["deployment", "daemonset"] = Field(
        default="deployment",
        description="deployment or daemonset.",
        json_schema_extra={"cli": "--kind"},
    )
    container: str = Field(default="", description="Container name (default: the first).")

    default_cluster_timeout: ClassVar[float] = 600
    undoable: ClassVar[bool] = True

    def describe(self) -> str:
        return f"{self.workload} {self.namespace}/{self.name} image {self.image}"

    def workload_name(self) -> str:
        return f"{self.workload} {self.namespace}/{self.name}"

    def problems(self) -> list[str]:
        if not _IMAGE_RE.match(self.image):
            return [f"image {self.image!r} is not a valid image reference"]
        return []

    def undo(self, previous: str) -> AddonTarget:
        return self.model_copy(update={"image": previous})
