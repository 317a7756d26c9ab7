"""Signed webhook requests (scheme v1): what a client signs, and what the service checks.

The HMAC-SHA256, keyed with FLOTILLA_WEBHOOK_SECRET, covers these seven lines joined by
"\\n" (no trailing newline):

    v1
    METHOD                    (upper case)
    path                      (percent-encoded as on the request line, query included)
    Idempotency-Key           ("" when the request has none)
    timestamp                 (unix seconds, as in X-Flotilla-Timestamp)
    nonce                     (as in X-Flotilla-Nonce)
    sha256(body)              (lowercase hex; of the empty string for a GET)

and is sent as `X-Flotilla-Signature: v1=<hex>`. A captured request therefore only works
for its own method, path (so its own run and action) and Idempotency-Key, within the time
window, and once: the service remembers each nonce until its timestamp leaves the window.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from typing import Protocol

VERSION = "v1"
TIMESTAMP_HEADER = "X-Flotilla-Timestamp"
NONCE_HEADER = "X-Flotilla-Nonce"
SIGNATURE_HEADER = "X-Flotilla-Signature"
KEY_HEADER = "Idempotency-Key"
# Part of a workflow id and of URLs: no '/' (child ids use it) and nothing to escape.
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
WINDOW_SECONDS = 300
# 16-128 characters: `openssl rand -hex 16`, a UUID, a token_urlsafe.
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def canonical(method: str, path: str, key: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The string to sign; `path` exactly as sent on the request line."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([VERSION, method.upper(), path, key, timestamp, nonce, digest]).encode()


def signature(secret: str, message: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of message>`, the value of X-Flotilla-Signature."""
    return f"{VERSION}=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(
    secret: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    key: str = "",
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers of one signed request (with Idempotency-Key when `key` is given).

    `path` is the percent-encoded path (and query) the client puts on the request line;
    send it unchanged (e.g. `yarl.URL(url, encoded=True)` with aiohttp). A fresh random
    nonce and the current time are used unless given."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_hex(16)
    headers = {
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, canonical(method, path, key, timestamp, nonce, body)),
    }
    if key:
        headers[KEY_HEADER] = key
    return headers


class NonceStore(Protocol):
    """Nonces seen within the window. One replica can keep them in memory; several
    replicas behind a load balancer need one shared store, or a request replayed to
    another replica is accepted there."""

    async def remember(self, nonce: str, *, until: float) -> bool:
        """Records `nonce` until the unix time `until`; False if it is already recorded."""
        ...


class NoncesFull(Exception):
    """The store holds its maximum of unexpired nonces; accepting more would mean
    forgetting one that can still be replayed."""


class MemoryNonces:
    """An in-process NonceStore bounded to `limit` unexpired nonces (NoncesFull beyond)."""

    def __init__(self, *, limit: int = 100_000):
        self._limit = limit
        self._until: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap, soonest first

    async def remember(self, nonce: str, *, until: float) -> bool:
        now = time.time()
        while self._expiries and self._expiries[0][0] <= now:
            del self._until[heapq.heappop(self._expiries)[1]]
        if nonce in self._until:
            return False
        if len(self._until) >= self._limit:
            raise NoncesFull(f"{len(self._until)} signed requests within the window")
        self._until[nonce] = until
        heapq.heappush(self._expiries, (until, nonce))
        return True
