"""Server-side apply, simplified but with the parts clients rely on.

Ownership is tracked per field manager in `metadata.managedFields` (FieldsV1 format):
leaves of the applied configuration, lists keyed by their merge key (`k:{"name":..}`)
and other lists owned whole. Applying merges the configuration into the live object,
removes fields this manager applied before but no longer does (unless another manager
owns them), and reports a 409 Conflict when another *apply* manager owns a field with a
different value, unless `force=true`. Writes through update/patch are not recorded as
managers, so they never conflict.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from lab.api.patching import MERGE_KEYS, strategic_merge_patch
from lab.store import ApiError, Obj, now_iso

Path = tuple[str, ...]

# Metadata a client may own; everything else in metadata belongs to the server.
_OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


def _paths(value: Any, prefix: Path, field: str = "") -> set[Path]:
    if isinstance(value, dict) and value:
        out: set[Path] = set()
        for k, v in value.items():
            out |= _paths(v, (*prefix, f"f:{k}"), k)
        return out
    if isinstance(value, list) and value and field in MERGE_KEYS:
        key = next(
            (k for k in MERGE_KEYS[field] if isinstance(value[0], dict) and k in value[0]), None
        )
        if key is not None and all(isinstance(i, dict) and key in i for i in value):
            out = set()
            for item in value:
                element = f"k:{json.dumps({key: item[key]}, separators=(',', ':'))}"
                rest = {k: v for k, v in item.items()}
                out |= _paths(rest, (*prefix, element)) or {(*prefix, element)}
            return out
    return {prefix}


def field_paths(applied: Obj) -> set[Path]:
    """The leaf paths an applied configuration sets."""
    body = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = applied.get("metadata") or {}
    owned_meta = {k: meta[k] for k in _OWNED_METADATA if meta.get(k)}
    paths = _paths(body, ())
    if owned_meta:
        paths |= _paths({"metadata": owned_meta}, ())
    return {p for p in paths if p}


def to_fields_v1(paths: set[Path]) -> Obj:
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    return root


def from_fields_v1(tree: Obj, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    children = {k: v for k, v in tree.items() if k != "."}
    if not children:
        return {prefix} if prefix else set()
    for k, v in children.items():
        out |= from_fields_v1(v if isinstance(v, dict) else {}, (*prefix, k))
    return out


def _step(node: Any, element: str) -> Any:
    if element.startswith("f:") and isinstance(node, dict):
        return node.get(element[2:])
    if element.startswith("k:") and isinstance(node, list):
        want = json.loads(element[2:])
        return next(
            (
                i
                for i in node
                if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())
            ),
            None,
        )
    return None


def value_at(obj: Any, path: Path) -> Any:
    for element in path:
        obj = _step(obj, element)
        if obj is None:
            return None
    return obj


def remove_path(obj: Any, path: Path) -> None:
    parent = value_at(obj, path[:-1])
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        item = _step(parent, last)
        if item is not None:
            parent.remove(item)


def _dotted(path: Path) -> str:
    return "".join(f".{e[2:]}" if e.startswith("f:") else f"[{e[2:]}]" for e in path)


def apply(live: Obj | None, applied: Obj, *, manager: str, force: bool, api_version: str) -> Obj:
    """The object after `manager` applies `applied` onto `live` (None: not yet created)."""
    if not manager:
        raise ApiError(
            422,
            "Invalid",
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
            "Required value: is required for apply patch",
        )
    new_paths = field_paths(applied)
    base = copy.deepcopy(live) if live is not None else {}
    entries = list((base.get("metadata") or {}).get("managedFields") or [])
    mine: set[Path] = set()
    mine_time = now_iso()
    others: list[tuple[Obj, set[Path]]] = []
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1") or {})
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            mine = paths
            if paths == new_paths:
                mine_time = entry.get("time", mine_time)  # a no-op apply changes nothing
        else:
            others.append((entry, paths))

    conflicts: list[tuple[str, Path]] = []
    for entry, paths in others:
        if entry.get("operation") != "Apply":
            continue
        for path in paths & new_paths:
            if value_at(base, path) != value_at(applied, path):
                conflicts.append((entry.get("manager", ""), path))
    if conflicts and not force:
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{m}"',
                "field": _dotted(p),
            }
            for m, p in sorted(conflicts)
        ]
        lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
        raise ApiError(
            409,
            "Conflict",
            f"Apply failed with {len(causes)} conflict{'s' if len(causes) > 1 else ''}: {lines}",
            {"causes": causes},
        )
    if conflicts:
        taken = {p for _m, p in conflicts}
        for entry, paths in others:
            entry["fieldsV1"] = to_fields_v1(paths - taken)
            paths -= taken

    still_owned = set().union(*(p for _e, p in others)) if others else set()
    for path in sorted(mine - new_paths - still_owned, key=len, reverse=True):
        remove_path(base, path)

    merged = strategic_merge_patch(base, {k: v for k, v in applied.items() if k != "status"})
    meta = merged.setdefault("metadata", {})
    managed = [e for e, p in others if p]
    managed.append(
        {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": mine_time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(new_paths),
        }
    )
    meta["managedFields"] = managed
    return merged


def record_update(live: Obj, new: Obj, *, manager: str, api_version: str) -> None:
    """Records a non-apply write (update, patch) in `new`'s managedFields the way the API
    server does: the fields it changed move to `manager`'s `Update` entry, taken from
    whichever manager owned them (so a later `kubectl edit` shows up as the owner)."""
    if not manager:
        return
    body = {k: v for k, v in new.items() if k != "status"}
    before = {k: v for k, v in live.items() if k != "status"}
    changed = {p for p in field_paths(body) if value_at(body, p) != value_at(before, p)}
    if not changed:
        return
    meta = new.setdefault("metadata", {})
    entries = list(meta.get("managedFields") or [])
    kept: list[Obj] = []
    mine: set[Path] = set()
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1") or {})
        if entry.get("manager") == manager and entry.get("operation") == "Update":
            mine = paths
            continue
        rest = {p for p in paths if not any(p[: len(c)] == c or c[: len(p)] == p for c in changed)}
        if rest:
            kept.append({**entry, "fieldsV1": to_fields_v1(rest)})
    kept.append(
        {
            "manager": manager,
            "operation": "Update",
            "apiVersion": api_version,
            "time": now_iso(),
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(mine | changed),
        }
    )
    meta["managedFields"] = kept
