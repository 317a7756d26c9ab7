"""Wave and failure-budget specs as operators write them, parsed without the inventory.

Wave specs (comma-separated in one string, or one per list item), each optionally named
with a `name:` prefix: a count (`canary:1`, `5`), a share of the selected clusters (`10%`,
rounded up, at least one), a label selector (`env=staging`, `region in (eu,us)`; join
requirements with `&`, as in `env=prod&region=eu`), or `rest`.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel

from fleet.selectors import SelectorError, parse_selector

_NAMED_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_-]*):(?P<body>.+)$")
_COUNT_RE = re.compile(r"^\d+$")
_PERCENT_RE = re.compile(r"^(\d+(\.\d+)?)%$")
_BUDGET_RE = re.compile(r"^(\d+)(\.\d+)?(%?)$")


class WaveSpec(BaseModel):
    """One parsed wave: exactly one of count, percent, selector, rest."""

    name: str
    text: str
    count: int | None = None
    percent: float | None = None
    selector: str = ""
    rest: bool = False


class PlanError(ValueError):
    """A plan that cannot run; the message lists every problem found."""


def split_waves(text: str) -> list[str]:
    """Splits `canary:1,region in (eu,us),rest` on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


def parse_wave(text: str, index: int) -> WaveSpec:
    """Parses one wave spec; `index` (0-based) names unnamed count/percent waves."""
    stripped = text.strip()
    named = _NAMED_RE.match(stripped)
    body = named["body"].strip() if named else stripped
    name = named["name"] if named else ""
    if body == "rest":
        return WaveSpec(name=name or "rest", text=stripped, rest=True)
    if _COUNT_RE.match(body):
        if int(body) < 1:
            raise PlanError(f"wave {stripped!r}: a count must be at least 1")
        return WaveSpec(name=name or f"wave-{index + 1}", text=stripped, count=int(body))
    if match := _PERCENT_RE.match(body):
        percent = float(match[1])
        if not 0 < percent <= 100:
            raise PlanError(f"wave {stripped!r}: a share must be between 0% and 100%")
        return WaveSpec(name=name or f"wave-{index + 1}", text=stripped, percent=percent)
    selector = body.replace("&", ",")
    try:
        parse_selector(selector)
    except SelectorError as exc:
        raise PlanError(
            f"wave {stripped!r} is not a count, share, label selector or 'rest': {exc}"
        ) from None
    return WaveSpec(name=name or body, text=stripped, selector=selector)


def parse_waves(texts: list[str]) -> list[WaveSpec]:
    """Every wave of `texts`; refuses none at all and two waves of the same name (approvals
    and reports name waves)."""
    items = [part for text in texts for part in split_waves(text)]
    if not items:
        raise PlanError("no waves given (e.g. --waves canary:1,50%,rest)")
    waves = [parse_wave(item, i) for i, item in enumerate(items)]
    seen: set[str] = set()
    for wave in waves:
        if wave.name in seen:
            raise PlanError(f"two waves are named {wave.name!r}; give each wave its own name")
        seen.add(wave.name)
    return waves


def allowed_failures(budget: str, total: int) -> int | None:
    """Failures tolerated among `total` clusters: `"2"` -> 2, `"10%"` -> floor(10% of total).

    `""` means no limit at this level (None). Raises PlanError on anything else.
    """
    text = budget.strip()
    if not text:
        return None
    match = _BUDGET_RE.match(text)
    if not match or (match[2] and not match[3]):
        raise PlanError(f"failure budget {budget!r} must be a count (1) or a share (10%)")
    if match[3]:
        share = float(match[1] + (match[2] or ""))
        if share > 100:
            raise PlanError(f"failure budget {budget!r} is more than 100%")
        return math.floor(share * total / 100 + 1e-9)
    return int(match[1])
