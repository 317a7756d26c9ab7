"""Who is calling a lab cluster, and what they may do.

Each cluster has one admin bearer token (full access) and any number of extra users
with a verb list and a resource list (`"*"`, `pods`, `deployments.apps`, or
`deployments/scale`). Discovery, /version and health endpoints are open to every
authenticated caller, like the `system:discovery` role; self-reviews are always allowed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
ADMIN_NAME = "lab-admin"


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class User:
    name: str
    token: str
    verbs: frozenset[str] = frozenset({"*"})
    resources: frozenset[str] = frozenset({"*"})

    @property
    def groups(self) -> list[str]:
        base = ["system:authenticated"]
        return ["system:masters", *base] if self.name == ADMIN_NAME else base

    def allows(
        self, verb: str, *, group: str = "", resource: str = "", subresource: str = ""
    ) -> bool:
        """Whether this user may perform `verb` on the resource (any namespace)."""
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" in self.resources:
            return True
        names = {resource, f"{resource}.{group}" if group else resource}
        if subresource:
            names = {f"{n}/{subresource}" for n in names} | {f"{resource}/*"}
        return bool(names & self.resources)

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "token": self.token,
            "verbs": sorted(self.verbs),
            "resources": sorted(self.resources),
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> User:
        return cls(
            str(data["name"]),
            str(data["token"]),
            frozenset(data.get("verbs") or ["*"]),
            frozenset(data.get("resources") or ["*"]),
        )


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
