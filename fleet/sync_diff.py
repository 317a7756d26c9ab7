"""Comparing a desired object with a live one, field by field. Pure.

Paths follow managedFields' FieldsV1 element names for maps (`f:spec`, `f:hard`); a list
is compared whole (its elements' identity needs each field's merge key, which only the
server knows), so a drift inside `containers` reads `.spec.template.spec.containers`.
Only fields Git sets are compared (plus labels and annotations Git sets): what other
controllers add (defaults, status, their own annotations) is never drift.
"""

from __future__ import annotations

import json
from typing import Any

Path = tuple[str, ...]
_OWNED_METADATA = ("labels", "annotations")
_SKIP_TOP = ("apiVersion", "kind", "metadata", "status")


def _leaves(value: Any, prefix: Path) -> list[Path]:
    if isinstance(value, dict) and value:
        out: list[Path] = []
        for k in sorted(value):
            out += _leaves(value[k], (*prefix, f"f:{k}"))
        return out
    return [prefix]


def desired_paths(desired: dict[str, Any]) -> list[Path]:
    """The leaf paths `desired` sets (maps descended, lists whole)."""
    out: list[Path] = []
    for k in sorted(desired):
        if k not in _SKIP_TOP:
            out += _leaves(desired[k], (f"f:{k}",))
    meta = desired.get("metadata") or {}
    for k in _OWNED_METADATA:
        if isinstance(meta.get(k), dict):
            out += _leaves(meta[k], ("f:metadata", f"f:{k}"))
    return out


def value_at(obj: Any, path: Path) -> Any:
    for element in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(element[2:])
        if obj is None:
            return None
    return obj


def dotted(path: Path) -> str:
    return "".join(f".{e[2:]}" for e in path)


def as_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def compare(git: dict[str, Any], would: dict[str, Any], live: dict[str, Any]) -> list[Path]:
    """Paths Git sets where the live object differs from what applying Git would give."""
    return [p for p in desired_paths(git) if value_at(would, p) != value_at(live, p)]


def same_as_git(git: dict[str, Any], live: dict[str, Any]) -> bool:
    """Whether live already holds Git's value at every path Git sets (then applying
    changes none of them, and no dry-run is needed to tell)."""
    return all(value_at(git, p) == value_at(live, p) for p in desired_paths(git))


def applies_nothing(git: dict[str, Any], live: dict[str, Any], *, manager: str) -> bool:
    """Whether applying `git` as `manager` would leave `live` as it is: live holds Git's
    value at every path Git sets and `manager` owns no field outside them (one removed
    from Git, which the apply would remove). False is not a difference: a value the
    server normalises (`1Gi`) needs the dry-run to tell."""
    wanted = desired_paths(git)
    if any(value_at(git, p) != value_at(live, p) for p in wanted):
        return False
    return all(
        any(o[: len(p)] == p or p[: len(o)] == o for p in wanted) for o in _owned(live, manager)
    )


def released(would: dict[str, Any], live: dict[str, Any], *, manager: str) -> list[Path]:
    """Paths `manager` owns live but no longer would after applying: fields removed from
    Git, which the apply removes from the object."""
    return sorted(set(_owned(live, manager)) - set(_owned(would, manager)))


def _owned(obj: dict[str, Any], manager: str) -> list[Path]:
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            return _fields_paths(entry.get("fieldsV1") or {})
    return []


def _fields_paths(tree: Any, prefix: Path = ()) -> list[Path]:
    if not isinstance(tree, dict):
        return [prefix]
    children = [k for k in tree if k != "."]
    if not children:
        return [prefix]
    out: list[Path] = []
    for k in children:
        out += _fields_paths(tree[k], (*prefix, k))
    return out


def owners(live: dict[str, Any], path: Path, *, exclude: str = "") -> list[str]:
    """Field managers (other than `exclude`) whose managedFields cover `path`, or a field
    below or above it; most recent first."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    found: list[tuple[str, str]] = []
    for entry in entries:
        manager = entry.get("manager", "")
        if not manager or manager == exclude:
            continue
        for owned in _fields_paths(entry.get("fieldsV1") or {}):
            n = min(len(owned), len(path))
            if owned[:n] == path[:n]:
                found.append((entry.get("time", ""), manager))
                break
    return [m for _t, m in sorted(found, reverse=True)]
