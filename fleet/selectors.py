"""Kubernetes label selectors over cluster labels.

Grammar as `kubectl -l`: comma-separated requirements `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist). A cluster matches
when every requirement holds. `!=` and `notin` match clusters without the label, as in
Kubernetes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


class SelectorError(ValueError):
    """A selector that does not parse; the message says which part and why."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in" | "notin" | "exists" | "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        parts = []
        for r in self.requirements:
            vals = ",".join(sorted(r.values))
            parts.append(
                {"exists": r.key, "!exists": f"!{r.key}"}.get(r.op, f"{r.key} {r.op} ({vals})")
            )
        return ",".join(parts)


def parse_selector(text: str) -> Selector:
    """Parses a selector; the empty string selects everything. Raises SelectorError."""
    requirements = []
    for part in _split(text):
        requirements.append(_parse_requirement(part))
    return Selector(tuple(requirements))


def _split(text: str) -> list[str]:
    """Splits on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in selector {text!r}")
    parts.append(current)
    stripped = [p.strip() for p in parts]
    if stripped == [""]:
        return []
    if "" in stripped:
        raise SelectorError(f"empty requirement in selector {text!r}")
    return stripped


def _parse_requirement(part: str) -> Requirement:
    if m := _SET_RE.match(part):
        values = [v.strip() for v in m["values"].split(",")]
        if not all(values) or not all(_VALUE_RE.match(v) for v in values):
            raise SelectorError(f"bad value list in {part!r}")
        return Requirement(m["key"], m["op"], frozenset(values))
    if m := _EQ_RE.match(part):
        op = "notin" if m["op"] == "!=" else "in"
        return Requirement(m["key"], op, frozenset([m["value"]]))
    if m := _EXISTS_RE.match(part):
        return Requirement(m["key"], "!exists" if m["neg"] else "exists")
    raise SelectorError(
        f"cannot parse selector requirement {part!r} "
        "(expected k=v, k!=v, k in (a,b), k notin (a,b), k or !k)"
    )
