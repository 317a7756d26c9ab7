"""One simulated cluster as the runtime and the HTTP server see it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lab.auth import ADMIN_NAME, User
from lab.pki import ServingTLS
from lab.store import ObjectStore

HTTP_FAULTS = ("dark", "slow", "flaky")


@dataclass
class Cluster:
    name: str
    labels: dict[str, str]
    version: str  # the version it was created with; /version follows the store
    token: str
    store: ObjectStore
    port: int = 0
    management: bool = False
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)  # by token
    site: web.TCPSite | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends a dark/hang
    tls: ServingTLS | None = None  # its CA, trust bundle and serving certificate
    # Runs once before the cluster answers its first request: add-ons installed lazily,
    # which no client can tell from installed at start.
    contacted: Callable[[], None] | None = None

    @property
    def context(self) -> str:
        return f"lab-{self.name}"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def admin(self) -> User:
        return User(ADMIN_NAME, self.token)

    def authenticate(self, token: str) -> User | None:
        if token and token == self.token:
            return self.admin
        return self.users.get(token) if token else None
