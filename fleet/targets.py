"""What a rollout changes on each cluster: the base of every operation kind's target.

Each kind subclasses `Target` with its own fields and a `kind` literal, and says what only
it knows: how to describe itself, what makes a cluster unfit at plan time, which version a
planned cluster starts from, and how to undo it. The engine, planner, CLI and webhook ask
these methods and never test for a kind. `register_target` makes a subclass decodable
wherever a message carries `AnyTarget` (the operation registry calls it).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import SerializeAsAny, ValidatorFunctionWrapHandler, WrapValidator

from fleet.models import ClusterRecord, Model

_TARGETS: dict[str, type[Target]] = {}


class Target(Model):
    kind: str
    # Per-cluster time limit when the operator gives none, in seconds.
    default_cluster_timeout: ClassVar[float] = 1800
    # Whether a changed cluster can be put back (`undo`); enables rollback controls.
    undoable: ClassVar[bool] = False

    def describe(self) -> str:
        """One line for summaries and reports, e.g. `Kubernetes v1.31.2`."""
        raise NotImplementedError

    def problems(self) -> list[str]:
        """What is wrong with the target itself (checked before any cluster is read)."""
        return []

    def cluster_problem(self, record: ClusterRecord) -> str:
        """Why `record` cannot take this change, from the inventory alone; "" if it can."""
        return ""

    def known_version(self, record_version: str) -> str:
        """The version a planned cluster is known to start from ("" when learned live)."""
        return ""

    def undo(self, previous: str) -> Target:
        """The target that restores `previous` (a result's `from_version`)."""
        raise NotImplementedError(f"{self.kind} changes cannot be undone")


def register_target(cls: type[Target]) -> None:
    """Makes `cls` decodable as AnyTarget under its `kind` default."""
    kind = cls.model_fields["kind"].default
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__}.kind needs a literal default")
    _TARGETS[kind] = cls


def target_types() -> dict[str, type[Target]]:
    return dict(_TARGETS)


def _decode(value: Any, handler: ValidatorFunctionWrapHandler) -> Target:
    if isinstance(value, Target):
        return value
    kind = value.get("kind") if isinstance(value, dict) else None
    cls = _TARGETS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(_TARGETS)) or "none registered"
        raise ValueError(f"unknown operation kind {kind!r} (known: {known})")
    return cls.model_validate(value)


# A field holding any registered kind's target: decoded by `kind`, encoded with all fields.
AnyTarget = Annotated[SerializeAsAny[Target], WrapValidator(_decode)]
