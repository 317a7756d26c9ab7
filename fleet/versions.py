"""Kubernetes version parsing and the upgrade rules Cluster API enforces.

Rules (as kubeadm and the CAPI webhooks apply them): the control plane moves one minor
version at a time and never down (patch releases included); a node (kubelet) is never
newer than its control plane.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION_RE = re.compile(r"^v?(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?P<extra>[-+].*)?$")


class VersionError(ValueError):
    """A version that does not parse, or a change the upgrade rules forbid."""


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str) -> Version:
    """Parses `v1.30.6` or `1.30.6`; build suffixes (`+k3s1`, `-eks-1`) are ignored."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise VersionError(f"{text!r} is not a Kubernetes version (expected like v1.31.2)")
    return Version(int(match["major"]), int(match["minor"]), int(match["patch"]))


def upgrade_problem(current: str, target: str) -> str:
    """Why the control plane cannot go from `current` to `target`; "" when it can.

    Equal versions are allowed (nothing to do). An unknown (empty) current version is
    allowed: the live Cluster API objects are checked again before anything changes.
    """
    to = parse_version(target)
    if not current:
        return ""
    now = parse_version(current)
    if to == now:
        return ""
    if to < now:
        return f"{target} would downgrade from {current}; Kubernetes cannot be downgraded"
    if to.major != now.major:
        return f"{current} -> {target} changes the major version; not supported"
    if to.minor > now.minor + 1:
        steps = ", ".join(f"v{now.major}.{m}.x" for m in range(now.minor + 1, to.minor + 1))
        return f"{current} -> {target} skips a minor version; upgrade one minor at a time ({steps})"
    return ""


def node_skew_problem(control_plane: str, node: str) -> str:
    """Why nodes cannot run `node` under a control plane on `control_plane`; "" if they can."""
    if parse_version(node) > parse_version(control_plane):
        return f"node version {node} would be newer than the control plane {control_plane}"
    return ""


def check_upgrade(current: str, target: str) -> None:
    """Raises VersionError when `upgrade_problem` finds one."""
    if problem := upgrade_problem(current, target):
        raise VersionError(problem)
