"""The lab's fleet layout: cluster names, labels and starting versions.

Deterministic: the same count always yields the same clusters, so tests and benches can
name clusters without reading lab.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_VERSION = "v1.30.6"
MANAGEMENT = "mgmt"

# The first six clusters are the contract's default fleet; larger fleets repeat the
# pattern with the next ordinal (eu-dev-2, eu-staging-2, ...).
_PATTERN = [
    ("eu", "dev"),
    ("eu", "staging"),
    ("us", "staging"),
    ("eu", "prod"),
    ("us", "prod"),
    ("ap", "prod"),
]
_PROVIDERS = ["aws", "gcp", "azure", "onprem"]


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    version: str = DEFAULT_VERSION


def fleet(count: int = 6, *, version: str = DEFAULT_VERSION) -> list[ClusterSpec]:
    """`count` workload clusters named `<region>-<env>-<n>`, labelled env/region/provider."""
    specs = []
    for i in range(count):
        region, env = _PATTERN[i % len(_PATTERN)]
        name = f"{region}-{env}-{i // len(_PATTERN) + 1}"
        labels = {"env": env, "region": region, "provider": _PROVIDERS[i % len(_PROVIDERS)]}
        specs.append(ClusterSpec(name=name, labels=labels, version=version))
    return specs
