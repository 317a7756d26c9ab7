"""Label and field selectors, parsed once per request and matched against objects.

Field selectors accept any dotted path (`metadata.name`, `spec.nodeName`,
`involvedObject.uid`), which is more than a real API server allows per kind; an absent
field compares as the empty string, as Kubernetes does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lab.store import ApiError, Obj

Predicate = Callable[[Obj], bool]

_SET_TERM = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(\S*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^=!\s()]+)\s*$")


def _bad(kind: str, text: str) -> ApiError:
    return ApiError(400, "BadRequest", f"unable to parse requirement: invalid {kind}: {text!r}")


def _split_terms(text: str) -> list[str]:
    """Splits on commas that are not inside `in (...)` parentheses."""
    terms, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t for t in terms if t.strip()]


def label_selector(text: str | None) -> Predicate:
    """Matcher for a label selector string; 400 BadRequest when it does not parse."""
    if not text or not text.strip():
        return lambda _obj: True
    checks: list[tuple[str, str, frozenset[str]]] = []  # (operator, key, values)
    for term in _split_terms(text):
        if m := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            checks.append((m.group(2), m.group(1), values))
        elif m := _EQ_TERM.match(term):
            key, op, value = m.groups()
            checks.append(("notin" if op == "!=" else "in", key, frozenset({value})))
        elif m := _EXISTS.match(term):
            neg, key = m.groups()
            checks.append(("!exists" if neg else "exists", key, frozenset()))
        else:
            raise _bad("label selector", term)

    def check(labels: dict[str, str], op: str, key: str, values: frozenset[str]) -> bool:
        if op == "exists":
            return key in labels
        if op == "!exists":
            return key not in labels
        return (labels.get(key) in values) == (op == "in")

    def match(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(check(labels, *c) for c in checks)

    return match


def field_value(obj: Obj, path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return ""
        current = current[part]
    if isinstance(current, bool):
        return "true" if current else "false"
    return "" if current is None else str(current)


def field_selector(text: str | None) -> Predicate:
    """Matcher for a field selector (`=`, `==`, `!=` terms only, like Kubernetes)."""
    if not text or not text.strip():
        return lambda _obj: True
    checks: list[tuple[str, bool, str]] = []
    for term in text.split(","):
        if not term.strip():
            continue
        m = _EQ_TERM.match(term)
        if not m:
            raise _bad("field selector", term)
        path, op, value = m.groups()
        checks.append((path, op == "!=", value))

    def match(obj: Obj) -> bool:
        return all(
            (field_value(obj, p) != v) if neg else (field_value(obj, p) == v)
            for p, neg, v in checks
        )

    return match


def selector_string(selector: Obj | None) -> str:
    """A LabelSelector object (`matchLabels`, `matchExpressions`) as selector text."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
