"""Placement: which clusters each bundle goes to. Pure and deterministic.

A bundle goes to every cluster its selector matches, or, with `clusters: N`, to N of them
spread round-robin over the values of its `spread` label (sorted), each value's clusters
ranked by rendezvous hashing of (bundle, cluster). Hashing is the stable tie-break: the
same inventory always gives the same placement, and a cluster joining or leaving moves
only the copies it must (no reshuffle by name order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fleet.bundles import Placement
from fleet.models import Model
from fleet.selectors import Selector, parse_selector


class PlacedCluster(Model):
    name: str
    labels: dict[str, str]


class PlacementGroup(Model):
    """Clusters that receive the same bundles."""

    bundles: list[str]
    clusters: list[str]


def _score(bundle: str, cluster: str) -> bytes:
    return hashlib.blake2b(f"{bundle}\0{cluster}".encode(), digest_size=8).digest()


def place_one(
    bundle: str,
    placement: Placement,
    clusters: list[PlacedCluster],
    selector: Selector | None = None,
) -> list[str]:
    """Names of the clusters `bundle` goes to, sorted."""
    sel = selector or parse_selector(placement.selector)
    matching = [c for c in clusters if sel.matches(c.labels)]
    if placement.clusters is None or placement.clusters >= len(matching):
        return sorted(c.name for c in matching)
    by_value: dict[str, list[str]] = {}
    for c in matching:
        by_value.setdefault(
            c.labels.get(placement.spread, "") if placement.spread else "", []
        ).append(c.name)
    queues = [
        sorted(names, key=lambda n: _score(bundle, n)) for _, names in sorted(by_value.items())
    ]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < placement.clusters:
        for queue in queues:
            if depth < len(queue) and len(chosen) < placement.clusters:
                chosen.append(queue[depth])
        depth += 1
    return sorted(chosen)


def place(
    bundles: Iterable[tuple[str, Placement]], clusters: list[PlacedCluster]
) -> dict[str, list[str]]:
    """bundle -> the clusters it goes to."""
    selectors: dict[str, Selector] = {}
    out: dict[str, list[str]] = {}
    for name, placement in bundles:
        sel = selectors.get(placement.selector)
        if sel is None:
            sel = selectors[placement.selector] = parse_selector(placement.selector)
        out[name] = place_one(name, placement, clusters, sel)
    return out


def by_cluster(placed: dict[str, list[str]], clusters: Iterable[str]) -> dict[str, list[str]]:
    """cluster -> its bundles (sorted), for every cluster in `clusters`."""
    out: dict[str, list[str]] = {name: [] for name in clusters}
    for bundle, names in sorted(placed.items()):
        for name in names:
            out.setdefault(name, []).append(bundle)
    return out


def groups(per_cluster: dict[str, list[str]]) -> tuple[list[str], list[PlacementGroup]]:
    """A compact form for messages: the most common bundle set (every cluster not listed in
    a group gets it) and a group per other bundle set."""
    sets: dict[tuple[str, ...], list[str]] = {}
    for name, bundles in sorted(per_cluster.items()):
        sets.setdefault(tuple(bundles), []).append(name)
    if not sets:
        return [], []
    common = max(sets, key=lambda k: (len(sets[k]), k))
    rest = [
        PlacementGroup(bundles=list(k), clusters=v) for k, v in sorted(sets.items()) if k != common
    ]
    return list(common), rest
