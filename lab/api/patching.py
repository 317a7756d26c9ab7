"""The three PATCH flavours: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
Kubernetes strategic merge patch.

Strategic merge knows the merge keys of the built-in lists that matter in practice
(containers, env, ports, volumes, volumeMounts, conditions, ...) and honours the
`$patch` (merge|replace|delete), `$retainKeys`, `$setElementOrder/<list>` and
`$deleteFromPrimitiveList/<list>` directives kubectl emits. Lists without a known merge
key are replaced, as with Kubernetes types that declare no patch strategy.
"""

from __future__ import annotations

import copy
from typing import Any

from lab.store import ApiError

# list field -> merge key(s), tried in order (the first one present in the items wins).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "addresses": ("type",),
}
# Lists of scalars merged as sets.
MERGED_SCALAR_LISTS = {"finalizers"}

_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


def _invalid(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


# ---- JSON patch ------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _invalid(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError):
                raise _invalid(f"index {part!r} out of range") from None
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            raise _invalid(f"path element {part!r} not found")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                index = int(last)
            except ValueError:
                raise _invalid(f"invalid list index {last!r}") from None
            if not 0 <= index <= len(parent):
                raise _invalid(f"index {index} out of range")
            parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise _invalid(f"cannot add to a scalar at {last!r}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise _invalid("cannot remove the whole document")
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, list):
            return parent.pop(int(last))
        return parent.pop(last)
    except (KeyError, ValueError, IndexError, AttributeError):
        raise _invalid(f"path {'/'.join(parts)!r} not found for remove") from None


def json_patch(doc: Any, ops: Any) -> Any:
    """Applies RFC 6902 operations; 422 Invalid on a bad or failing operation."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _invalid(f"invalid JSON patch operation {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _resolve(doc, parts)  # must exist
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_resolve(doc, source))
            if kind == "move":
                _remove(doc, source)
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise _invalid(f"test operation failed at {op['path']!r}")
        else:
            raise _invalid(f"unknown JSON patch operation {kind!r}")
    return doc


# ---- merge patch -----------------------------------------------------------------------


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- strategic merge patch -------------------------------------------------------------


def strategic_merge_patch(doc: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch of `patch` onto `doc` (neither is modified)."""
    if not isinstance(patch, dict):
        raise ApiError(400, "BadRequest", "a strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(doc) if isinstance(doc, dict) else {}, patch)


def _merge_map(doc: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    retain = patch.get("$retainKeys")
    orders = {k[len(_ORDER) :]: v for k, v in patch.items() if k.startswith(_ORDER)}
    for key, value in patch.items():
        if key.startswith("$"):
            if key.startswith(_DELETE_FROM):
                field = key[len(_DELETE_FROM) :]
                doc[field] = [v for v in doc.get(field) or [] if v not in value]
            continue
        if value is None:
            doc.pop(key, None)
        elif isinstance(value, dict):
            current = doc.get(key)
            merged = _merge_map(current if isinstance(current, dict) else {}, value)
            if merged is None:
                doc.pop(key, None)
            else:
                doc[key] = merged
        elif isinstance(value, list):
            doc[key] = _merge_list(key, doc.get(key), value)
        else:
            doc[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(doc.get(field), list):
            doc[field] = _reorder(field, doc[field], order)
    if isinstance(retain, list):
        doc = {k: v for k, v in doc.items() if k in retain}
    return doc


def _merge_key(field: str, items: list[Any]) -> str | None:
    candidates = MERGE_KEYS.get(field, ())
    for key in candidates:
        if any(isinstance(i, dict) and key in i for i in items):
            return key
    return candidates[0] if candidates else None


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in MERGED_SCALAR_LISTS:
        return current + [copy.deepcopy(v) for v in patch if v not in current]
    key = _merge_key(field, current + patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [copy.deepcopy(i) for i in patch]
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        index = next(
            (
                n
                for n, c in enumerate(result)
                if isinstance(c, dict) and c.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(_merge_map({}, item))
        else:
            result[index] = _merge_map(result[index], item)
    return result


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    key = _merge_key(field, items)

    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    ranked = {value: n for n, value in enumerate(wanted)}
    listed = sorted((i for i in items if ident(i) in ranked), key=lambda i: ranked[ident(i)])
    return listed + [i for i in items if ident(i) not in ranked]
