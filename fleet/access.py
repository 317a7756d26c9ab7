"""Who may do what: roles, teams that own clusters by label selector, four-eyes policy.

The policy is one versioned YAML file (FLOTILLA_ACCESS_FILE), validated as a whole:

    version: 1
    four_eyes: env=prod          # runs touching these clusters: starter cannot approve
    admins: [user:root, group:platform-admins]
    teams:
      payments:
        clusters: team=payments  # the clusters the team owns (a label selector)
        viewer: [group:everyone]
        operator: [user:alice, group:payments-sre]
        approver: [user:bob]

A member is `user:<principal name>` or `group:<group>` (an OIDC groups claim, or a group
given to an API token). Roles accumulate upward: an operator and an approver can also view.
An admin holds every role on every cluster. Pure code: no I/O but `load_policy`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleet.selectors import Selector, SelectorError, parse_selector

POLICY_VERSION = 1
# Starts the refusal a run gives when its starter approves (workflows/rollout.py).
FOUR_EYES = "four-eyes"
MEMBER_KINDS = ("user", "group")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"  # start, pause, resume, abort, skip, rollback
    APPROVER = "approver"  # approve waves
    ADMIN = "admin"  # onboard, offboard, policies, tokens; every role everywhere


class AccessError(ValueError):
    """A refusal a person can act on: the message says what is missing; it never echoes
    a credential."""


class Principal(BaseModel):
    """An authenticated caller. `name` is what the audit trail and approvals record."""

    model_config = ConfigDict(frozen=True)

    name: str
    via: str  # token | oidc | webhook-secret | open | temporal
    groups: tuple[str, ...] = ()

    def members(self) -> set[str]:
        return {f"user:{self.name}"} | {f"group:{g}" for g in self.groups}


class Team(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clusters: str = Field(description="Label selector of the clusters the team owns.")
    viewer: list[str] = Field(default_factory=list)
    operator: list[str] = Field(default_factory=list)
    approver: list[str] = Field(default_factory=list)

    @field_validator("clusters")
    @classmethod
    def _selector(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("a team must own clusters: give a label selector, e.g. team=a")
        try:
            parse_selector(text)
        except SelectorError as exc:
            raise ValueError(f"selector {text!r} does not parse: {exc}") from None
        return text

    @field_validator("viewer", "operator", "approver")
    @classmethod
    def _members(cls, members: list[str]) -> list[str]:
        return [_member(m) for m in members]

    def selector(self) -> Selector:
        return parse_selector(self.clusters)

    def roles_of(self, members: set[str]) -> set[Role]:
        roles = {role for role in (Role.OPERATOR, Role.APPROVER) if members & set(self[role])}
        if roles or members & set(self.viewer):
            roles.add(Role.VIEWER)
        return roles

    def __getitem__(self, role: Role) -> list[str]:
        members: list[str] = getattr(self, role.value)
        return members


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    four_eyes: str = Field(
        default="env=prod",
        description="Clusters whose runs need a second person to approve; '' turns it off.",
    )
    admins: list[str] = Field(default_factory=list)
    teams: dict[str, Team] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version(cls, version: int) -> int:
        if version != POLICY_VERSION:
            raise ValueError(f"unsupported version {version}; this Flotilla reads version 1")
        return version

    @field_validator("four_eyes")
    @classmethod
    def _four_eyes(cls, text: str) -> str:
        try:
            parse_selector(text)
        except SelectorError as exc:
            raise ValueError(f"selector {text!r} does not parse: {exc}") from None
        return text

    @field_validator("admins")
    @classmethod
    def _admins(cls, members: list[str]) -> list[str]:
        return [_member(m) for m in members]

    def is_admin(self, who: Principal) -> bool:
        return bool(who.members() & set(self.admins))

    def teams_of(self, who: Principal) -> dict[str, set[Role]]:
        """The caller's teams and its roles in each (teams where it has none omitted)."""
        members = who.members()
        found = {name: team.roles_of(members) for name, team in self.teams.items()}
        return {name: roles for name, roles in found.items() if roles}

    def roles_on(self, who: Principal, labels: dict[str, str]) -> set[Role]:
        """The caller's roles on one cluster (given by its labels)."""
        if self.is_admin(who):
            return set(Role)
        roles: set[Role] = set()
        for name, team_roles in self.teams_of(who).items():
            if self.teams[name].selector().matches(labels):
                roles |= team_roles
        return roles

    def can(self, who: Principal, role: Role, labels: dict[str, str]) -> bool:
        return role in self.roles_on(who, labels)

    def can_somewhere(self, who: Principal, role: Role) -> bool:
        """Whether the caller holds `role` in any team (or is an admin)."""
        return self.is_admin(who) or any(role in r for r in self.teams_of(who).values())

    def refused(
        self, who: Principal, role: Role, clusters: Iterable[tuple[str, dict[str, str]]]
    ) -> list[str]:
        """The named clusters on which the caller lacks `role` (sorted); [] when allowed."""
        return sorted(name for name, labels in clusters if not self.can(who, role, labels))

    def needs_four_eyes(self, clusters: Iterable[dict[str, str]]) -> bool:
        if not self.four_eyes.strip():
            return False
        selector = parse_selector(self.four_eyes)
        return any(selector.matches(labels) for labels in clusters)


def _member(text: str) -> str:
    kind, _, name = text.partition(":")
    if kind not in MEMBER_KINDS or not name.strip():
        raise ValueError(f"member {text!r} must be user:<name> or group:<group>")
    return text


# With no policy file the API is open to every authenticated caller (one shared webhook
# credential cannot tell people apart, so there is no four-eyes either).
OPEN = Policy(version=POLICY_VERSION, four_eyes="", admins=["group:*open*"])


def open_principal(name: str, via: str) -> Principal:
    """A caller of an API without a policy file: an admin of everything."""
    return Principal(name=name, via=via, groups=("*open*",))


def parse_policy(data: Any, *, source: str = "access policy") -> Policy:
    """Validates a loaded document; AccessError lists every problem on one line."""
    if not isinstance(data, dict):
        raise AccessError(f"{source}: expected a mapping with version, admins and teams")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "document"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise AccessError(f"{source}: " + "; ".join(problems)) from None


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AccessError(f"cannot read access policy {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise AccessError(f"{path}: not valid YAML{where}") from None
    return parse_policy(data, source=str(path))
