"""Plan building: from a rollout spec and the inventory to a fixed list of waves.

Waves (fleet/wave_specs.py) take clusters in a stable order (dev, then test/qa, staging,
unlabelled, prod; then by name) from those no earlier wave took, so the riskiest clusters
come last and the same inventory always gives the same plan.
"""

from __future__ import annotations

import math

from fleet.models import ClusterRecord
from fleet.rollout_models import Plan, PlannedCluster, PlannedWave, RolloutSpec
from fleet.selectors import parse_selector
from fleet.wave_specs import PlanError, WaveSpec, parse_waves
from fleet.windows import WINDOW_LABEL, WindowError, parse_window

ENV_RANK = {"dev": 0, "test": 1, "qa": 1, "staging": 2, "prod": 4}
_UNLABELLED_RANK = 3


def order_key(record: ClusterRecord) -> tuple[int, str]:
    return ENV_RANK.get(record.labels.get("env", ""), _UNLABELLED_RANK), record.name


def build_plan(spec: RolloutSpec, records: list[ClusterRecord]) -> Plan:
    """Selects, orders and splits clusters into waves; raises PlanError listing problems.

    The spec itself was validated when it was made (selector, waves, options, target).
    Refuses: an empty selection, waves that select none of it, locked clusters, bad window
    labels, and what the target finds wrong with a cluster from its record (e.g. a version
    skip). Live checks (the add-on exists, Cluster API versions) run in the preflight.
    """
    selector = parse_selector(spec.selector)
    waves = parse_waves(spec.waves)
    chosen = sorted((r for r in records if selector.matches(r.labels)), key=order_key)
    where = f"matching {spec.selector!r}" if spec.selector else "in the inventory"
    if not chosen:
        raise PlanError(f"no clusters {where}; nothing to roll out")
    problems = _cluster_problems(spec, chosen)
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
        planned.append(PlannedWave(name=wave.name, text=wave.text, clusters=_planned(spec, take)))
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


def _planned(spec: RolloutSpec, records: list[ClusterRecord]) -> list[PlannedCluster]:
    return [
        PlannedCluster(
            name=r.name,
            version=spec.operation.known_version(r.version),
            window=r.labels.get(WINDOW_LABEL, ""),
        )
        for r in records
    ]


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
        if problem := spec.operation.cluster_problem(record):
            problems.append(f"{record.name}: {problem}")
    return problems
