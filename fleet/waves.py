"""Plan building: from a rollout spec and the inventory to a fixed list of waves.

Wave specs (comma-separated in one string, or one per list item), each optionally named
with a `name:` prefix: a count (`canary:1`, `5`), a share of the selected clusters (`10%`,
rounded up, at least one), a label selector (`env=staging`, `region in (eu,us)`; join
requirements with `&`, as in `env=prod&region=eu`), or `rest`. Waves take clusters in a stable
order (dev, then test/qa, staging, unlabelled, prod; then by name) from those no earlier
wave took, so the riskiest clusters come last and the same inventory always gives the
same plan.
"""

from __future__ import annotations

import math
import re

from fleet.models import ClusterRecord
from fleet.rollout_models import (
    WINDOW_LABEL,
    K8sTarget,
    Plan,
    PlannedCluster,
    PlannedWave,
    RolloutSpec,
    WaveSpec,
)
from fleet.selectors import SelectorError, parse_selector
from fleet.versions import VersionError, parse_version, upgrade_problem
from fleet.windows import WindowError, parse_window

ENV_RANK = {"dev": 0, "test": 1, "qa": 1, "staging": 2, "prod": 4}
_UNLABELLED_RANK = 3
_NAMED_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_-]*):(?P<body>.+)$")
_COUNT_RE = re.compile(r"^\d+$")
_PERCENT_RE = re.compile(r"^(\d+(\.\d+)?)%$")
_BUDGET_RE = re.compile(r"^(\d+)(\.\d+)?(%?)$")


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
    items = [part for text in texts for part in split_waves(text)]
    if not items:
        raise PlanError("no waves given (e.g. --waves canary:1,50%,rest)")
    return [parse_wave(item, i) for i, item in enumerate(items)]


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


def order_key(record: ClusterRecord) -> tuple[int, str]:
    return ENV_RANK.get(record.labels.get("env", ""), _UNLABELLED_RANK), record.name


def build_plan(spec: RolloutSpec, records: list[ClusterRecord]) -> Plan:
    """Selects, orders and splits clusters into waves; raises PlanError listing problems.

    Refuses: an empty selection, waves that select none of it, unparsable options, locked
    clusters, and (Kubernetes upgrades) version skips or downgrades against each record's
    known version. Live checks (the add-on exists, Cluster API versions) run in the
    workflow's preflight.
    """
    try:
        selector = parse_selector(spec.selector)
    except SelectorError as exc:
        raise PlanError(str(exc)) from None
    waves = parse_waves(spec.waves)
    chosen = sorted((r for r in records if selector.matches(r.labels)), key=order_key)
    where = f"matching {spec.selector!r}" if spec.selector else "in the inventory"
    if not chosen:
        raise PlanError(f"no clusters {where}; nothing to roll out")
    problems = _option_problems(spec, len(chosen)) + _cluster_problems(spec, chosen)
    if problems:
        raise PlanError("; ".join(problems))

    remaining = list(chosen)
    planned: list[PlannedWave] = []
    notes: list[str] = []
    for wave in waves:
        take = _take(wave, remaining, total=len(chosen))
        if not take:
            notes.append(f"wave {wave.text!r} selects no cluster and was dropped")
            continue
        taken = {r.name for r in take}
        remaining = [r for r in remaining if r.name not in taken]
        planned.append(PlannedWave(name=wave.name, text=wave.text, clusters=_planned(take)))
    if not planned:
        raise PlanError(f"no wave selects any of the {len(chosen)} clusters {where} (add 'rest')")
    if remaining:
        names = ", ".join(r.name for r in remaining)
        notes.append(f"{len(remaining)} selected clusters are in no wave (add 'rest'): {names}")
    return Plan(spec=spec, waves=planned, notes=notes)


def _take(wave: WaveSpec, remaining: list[ClusterRecord], *, total: int) -> list[ClusterRecord]:
    if wave.rest:
        return list(remaining)
    if wave.count is not None:
        return remaining[: wave.count]
    if wave.percent is not None:
        return remaining[: max(1, math.ceil(wave.percent * total / 100 - 1e-9))]
    selector = parse_selector(wave.selector)
    return [r for r in remaining if selector.matches(r.labels)]


def _planned(records: list[ClusterRecord]) -> list[PlannedCluster]:
    return [
        PlannedCluster(
            name=r.name,
            labels=r.labels,
            credential=r.credential,
            management=r.management,
            version=r.version,
        )
        for r in records
    ]


def _option_problems(spec: RolloutSpec, total: int) -> list[str]:
    problems = []
    for budget in (spec.options.failure_budget, spec.options.wave_failure_budget):
        try:
            allowed_failures(budget, total)
        except PlanError as exc:
            problems.append(str(exc))
    if spec.options.window:
        try:
            parse_window(spec.options.window)
        except WindowError as exc:
            problems.append(str(exc))
    if spec.options.auto_rollback and isinstance(spec.operation, K8sTarget):
        problems.append("--auto-rollback applies to add-on rollouts; Kubernetes cannot downgrade")
    if isinstance(spec.operation, K8sTarget):
        try:
            parse_version(spec.operation.version)
        except VersionError as exc:
            problems.append(str(exc))
    return problems


def _cluster_problems(spec: RolloutSpec, records: list[ClusterRecord]) -> list[str]:
    problems = []
    for record in records:
        if record.lock is not None:
            problems.append(
                f"{record.name} is locked by {record.lock.holder} ({record.lock.operation})"
            )
        label_window = record.labels.get(WINDOW_LABEL, "")
        if label_window:
            try:
                parse_window(label_window)
            except WindowError as exc:
                problems.append(f"{record.name}: {exc}")
        if isinstance(spec.operation, K8sTarget):
            try:
                problem = upgrade_problem(record.version, spec.operation.version)
            except VersionError as exc:
                problem = str(exc)
            if problem:
                problems.append(f"{record.name}: {problem}")
    return problems
