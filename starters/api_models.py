"""Request and response bodies of the API's reads and administration (starters/api.py);
the start and control bodies are in starters/webhook_models.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet.audit import AuditRecord
from fleet.certs_models import CertReport
from fleet.models import ClusterRecord
from fleet.store import TokenInfo


class ClusterList(BaseModel):
    """The clusters the caller may see (its teams' clusters)."""

    clusters: list[ClusterRecord]


class CertReports(BaseModel):
    """The last scan's report of each visible cluster; `unscanned` were never scanned."""

    reports: list[CertReport]
    unscanned: list[str] = Field(default_factory=list)


class OperationSummary(BaseModel):
    workflow_id: str
    type: str
    kind: str = ""
    status: str  # the outcome (starters/ops.py)
    started_at: datetime | None = None
    closed_at: datetime | None = None


class OperationList(BaseModel):
    operations: list[OperationSummary]


class TokenCreateBody(BaseModel):
    """A new API token authenticating as principal `name`, member of `groups`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9@._:-]{0,99}$")
    groups: list[str] = Field(default_factory=list)


class TokenCreated(BaseModel):
    """The token itself is shown here only; the store keeps its hash."""

    info: TokenInfo
    token: str


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class AuditPage(BaseModel):
    records: list[AuditRecord]


class WhoAmI(BaseModel):
    """The caller as the API sees it: name, groups and roles per team."""

    name: str
    via: str
    groups: list[str]
    admin: bool
    teams: dict[str, list[str]]
    detail: dict[str, Any] = Field(default_factory=dict)
