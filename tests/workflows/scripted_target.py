"""The `scripted` operation kind's target (imported passed-through by the sandboxed child,
so the child sees the class the engine decoded)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fleet.targets import Target


class ScriptedTarget(Target):
    """The `scripted` operation kind's target: nothing real changes."""

    kind: Literal["scripted"] = "scripted"
    image: str = "new"
    # Each cluster's script by name: outcome = ok | fail | unreachable; hold = yes.
    scripts: dict[str, dict[str, str]] = Field(default_factory=dict)
    undoable: ClassVar[bool] = True

    def describe(self) -> str:
        return f"scripted change to {self.image}"

    def undo(self, previous: str) -> ScriptedTarget:
        return self.model_copy(update={"image": previous})
