"""The `annotate` kind's target (pure, like fleet/ targets): one annotation on kube-system."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fleet.targets import Target

PREFIX = "example.flotilla.io/"


class AnnotateTarget(Target):
    """Set one annotation on kube-system."""

    kind: Literal["annotate"] = "annotate"
    key: str = Field(min_length=1, description="Annotation key under example.flotilla.io/.")
    value: str = Field(description="Annotation value.")
    default_cluster_timeout: ClassVar[float] = 60
    undoable: ClassVar[bool] = True

    def describe(self) -> str:
        return f"annotation {PREFIX}{self.key}={self.value}"

    def undo(self, previous: str) -> AnnotateTarget:
        return self.model_copy(update={"value": previous})
