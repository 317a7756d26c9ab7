"""What Flotilla records on each cluster it syncs (ConfigMap kube-system/flotilla-sync):
the commit applied, object keys per bundle, and per object the drift history the drift
sweep keeps (first seen per path, recent reverts, an enforcement conflict)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from fleet.models import Model


class ObjectDrift(Model):
    first_seen: dict[str, datetime] = Field(default_factory=dict)  # path -> when
    reverts: list[datetime] = Field(default_factory=list)  # enforcement re-applies
    conflict: str = ""  # the manager enforcement stopped fighting
    conflict_sha: str = ""  # the commit the conflict was found at (a new commit retries)


class SyncState(Model):
    sha: str = ""
    repo: str = ""
    bundles: dict[str, list[str]] = Field(default_factory=dict)  # bundle -> object keys
    retained: list[str] = Field(default_factory=list)  # bundles kept for a healthy copy
    drift: dict[str, ObjectDrift] = Field(default_factory=dict)  # object key -> history
