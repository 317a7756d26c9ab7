"""Messages of Git syncs and drift sweeps, and the sync target the rollout engine runs.

A sync is pinned to one commit SHA. Its `SyncTarget` carries the placement compactly
(the most common bundle set plus groups of clusters with other sets), never manifests:
activities read the manifests from Git at the SHA on the worker.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from fleet.models import ClusterRef, Model
from fleet.placement import PlacementGroup
from fleet.targets import Target

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# On every cluster: what Flotilla applied there (objects per bundle, the SHA, drift state).
INVENTORY_NAMESPACE = "kube-system"
INVENTORY_NAME = "flotilla-sync"
FIELD_MANAGER = "flotilla"


class SyncTarget(Target):
    """Apply the bundles placed on each cluster at commit `sha`, pruning what left Git."""

    kind: Literal["sync"] = "sync"
    repo: str = Field(min_length=1, description="Git repository: a local path or URL.")
    sha: str = Field(description="The commit every cluster is synced to (40 hex digits).")
    ref: str = Field(default="", description="The ref the operator named (display only).")
    started_by: str = Field(default="", description="Who started the sync.")
    default_bundles: list[str] = Field(default_factory=list)
    groups: list[PlacementGroup] = Field(default_factory=list)
    # Where each workload bundle's copies go: a cluster losing a copy keeps it until one
    # of these is healthy.
    workload_copies: dict[str, list[str]] = Field(default_factory=dict)
    prune_threshold: int = Field(default=25, ge=0, le=100)
    prune_approved_by: str = Field(default="", description="Who approved a large prune.")

    default_cluster_timeout: ClassVar[float] = 900

    def describe(self) -> str:
        at = f"{self.ref}@{self.sha[:12]}" if self.ref and self.ref != self.sha else self.sha[:12]
        return f"sync {at}" + (f" by {self.started_by}" if self.started_by else "")

    def problems(self) -> list[str]:
        if not SHA_RE.match(self.sha):
            return [f"sha {self.sha!r} is not a full commit SHA (40 hex digits)"]
        return []

    def bundles_for(self, cluster: str) -> list[str]:
        for g in self.groups:
            if cluster in g.clusters:
                return g.bundles
        return self.default_bundles


class GitRef(Model):
    repo: str
    ref: str = "HEAD"


class ResolvedRef(Model):
    repo: str
    ref: str
    sha: str
    author: str = ""
    subject: str = ""


class PlacementRequest(Model):
    """Compute the placement of the repository at `sha` over the inventory."""

    repo: str
    ref: str = ""
    sha: str
    started_by: str = ""
    prune_approved_by: str = ""


class BundleChange(Model):
    bundle: str
    added: list[str] = Field(default_factory=list)  # clusters gaining it
    removed: list[str] = Field(default_factory=list)  # clusters losing it


class PlacementResult(Model):
    target: SyncTarget
    selector: str  # the fleet a sync visits
    waves: list[str]
    max_concurrent: int
    failure_budget: str
    soak: str
    approve_between: bool
    approval_timeout: str = "24h"
    clusters: list[str]  # every cluster the sync visits (to place or to prune)
    bundles: int


class ObjectChange(Model):
    key: str  # apiVersion/Kind/namespace/name
    action: Literal["create", "change", "delete", "retain"]
    bundle: str
    paths: list[str] = Field(default_factory=list)  # changed fields, for `change`


class ClusterDiff(Model):
    """What a sync would do (preview) or did (apply) on one cluster."""

    cluster: str
    previous_sha: str = ""
    bundles: list[str] = Field(default_factory=list)
    gained: list[str] = Field(default_factory=list)  # bundles new on this cluster
    lost: list[str] = Field(default_factory=list)  # bundles leaving this cluster
    changes: list[ObjectChange] = Field(default_factory=list)
    placed_before: int = 0  # objects Flotilla had placed here
    unchanged: int = 0
    problem: str = ""  # why it cannot be synced (unknown kind)
    # Why applying it needs an approval first (the prune guard); the run asks for one.
    approval: str = ""
    unreachable: str = ""  # why it could not be read (the engine skips it, by option)
    # Creates counted, not listed (previews: 20 objects x 1,000 clusters listed one by one
    # made SyncPlan's answer larger than Temporal's 2 MB payload limit).
    created: int = 0

    def count(self, action: str) -> int:
        listed = sum(1 for c in self.changes if c.action == action)
        return listed + (self.created if action == "create" else 0)

    def compact(self) -> ClusterDiff:
        """This diff with its creates counted instead of listed."""
        return self.model_copy(
            update={
                "created": self.count("create"),
                "changes": [c for c in self.changes if c.action != "create"],
            }
        )

    def summary(self) -> str:
        parts = [f"+{self.count('create')}", f"~{self.count('change')}"]
        parts.append(f"-{self.count('delete')}")
        if retained := self.count("retain"):
            parts.append(f"kept {retained}")
        return " ".join(parts)


class SyncClusterRequest(Model):
    """Preview or apply one cluster's bundles at `sha`."""

    cluster: ClusterRef
    target: SyncTarget
    dry_run: bool = True
    keep: list[str] = Field(default_factory=list)  # bundles whose objects must not be pruned
    # Only what a preflight needs (kinds served, the prune guard): no object is read.
    checks_only: bool = False


class PreviewRequest(Model):
    clusters: list[ClusterRef]
    target: SyncTarget
    checks_only: bool = False


class PreviewResult(Model):
    diffs: list[ClusterDiff]


class SyncPreviewInput(Model):
    repo: str
    ref: str
    started_by: str = ""
    prune_approved_by: str = ""


class SyncPreview(Model):
    """Answer of `flotilla sync plan`: the placement and what each cluster would see."""

    placement: PlacementResult
    diffs: list[ClusterDiff]
    changes: list[BundleChange]


class CopiesRequest(Model):
    """Is at least one copy of `objects` healthy on one of `clusters`?"""

    clusters: list[ClusterRef]
    objects: list[str]  # keys of workload objects
    timeout_seconds: float = 300


class CopiesAnswer(Model):
    healthy_on: str = ""  # the cluster with a healthy copy, "" when none in time


# --- drift ------------------------------------------------------------------------------


class Drift(Model):
    """One field of one placed object that differs from Git."""

    cluster: str
    bundle: str
    key: str
    path: str  # JSON path, e.g. .spec.hard.pods
    desired: str  # JSON text of the value in Git ("" for absent)
    live: str
    manager: str = ""  # the field manager owning the live value (managedFields)
    mode: Literal["inform", "enforce"] = "inform"
    first_seen: datetime
    corrected: bool = False
    conflict: str = ""  # set when enforcement stopped: the manager it fights


class DriftCheck(Model):
    cluster: ClusterRef
    bundle: str
    repo: str
    fight_reverts: int = 3
    fight_window_seconds: float = 600
    # False: only detect (and count in `to_correct` what enforce mode would re-apply);
    # the sweep re-applies in a second call once it has seen the cluster is not locked.
    enforce: bool = False


class DriftCheckResult(Model):
    cluster: str
    sha: str = ""
    objects: int = 0
    drifts: list[Drift] = Field(default_factory=list)
    corrected: int = 0
    to_correct: int = 0  # objects enforce mode would re-apply (detection only)
    conflicts: list[str] = Field(default_factory=list)  # object keys with a conflict


class DriftSweepInput(Model):
    bundle: str
    repo: str
    selector: str = ""
    # The clusters the last sync placed the bundle on (its schedule carries them, so a
    # sweep never visits clusters without it); None: every cluster matching `selector`.
    clusters: list[str] | None = None
    concurrency: int = Field(default=50, ge=1, le=200)


class DriftSweepResult(Model):
    bundle: str
    clusters: int = 0
    checked: int = 0
    checked_clusters: list[str] = Field(default_factory=list)  # so far, while it runs
    objects: int = 0
    drifts: list[Drift] = Field(default_factory=list)
    corrected: int = 0
    conflicts: list[str] = Field(default_factory=list)  # cluster: key: manager
    # cluster -> why its drift was not corrected this sweep (an operation holds its lock)
    deferred: dict[str, str] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)
