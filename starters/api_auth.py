"""Who is calling the API: API tokens (fleet/store.py), OIDC ID tokens, and the webhook's
signed requests and shared token (starters/webhook_signing.py).

An OIDC ID token is accepted when its signature verifies against the issuer's JWKS
(RS256/ES256 family only), its `iss` and `aud` are the configured ones and it has not
expired; its `sub` (or FLOTILLA_OIDC_NAME_CLAIM) names the principal and its groups
claim gives the groups the access policy maps to roles. Every refusal is one line that
says what to fix and never echoes the credential.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt

from fleet.access import Principal
from fleet.store import TOKEN_PREFIX, Store
from starters.errors import usage
from starters.webhook_signing import (
    KEY_HEADER,
    NONCE_HEADER,
    NONCE_RE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    VERSION,
    WINDOW_SECONDS,
    MemoryNonces,
    NoncesFull,
    NonceStore,
    canonical,
    signature,
)

SECRET_ENV = "FLOTILLA_WEBHOOK_SECRET"
TOKEN_ENV = "FLOTILLA_WEBHOOK_TOKEN"
WINDOW_ENV = "FLOTILLA_WEBHOOK_WINDOW"
WEBHOOK_PRINCIPAL = "webhook"  # who the shared secret or token authenticates as
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
log = logging.getLogger("flotilla.api")


class HttpError(Exception):
    """An answer to the caller: a status and one readable line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Oidc:
    """An OIDC issuer whose ID tokens the API accepts."""

    issuer: str
    audience: str
    jwks_url: str = ""  # default: the issuer's discovery document's jwks_uri
    groups_claim: str = "groups"
    name_claim: str = "sub"
    _jwks: dict[str, jwt.PyJWKClient] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls) -> Oidc | None:
        env = os.environ
        issuer, audience = (
            env.get("FLOTILLA_OIDC_ISSUER", ""),
            env.get("FLOTILLA_OIDC_AUDIENCE", ""),
        )
        if not issuer:
            return None
        if not audience:
            raise usage("FLOTILLA_OIDC_ISSUER is set: set FLOTILLA_OIDC_AUDIENCE too")
        return cls(
            issuer=issuer,
            audience=audience,
            jwks_url=env.get("FLOTILLA_OIDC_JWKS_URL", ""),
            groups_claim=env.get("FLOTILLA_OIDC_GROUPS_CLAIM", "groups"),
            name_claim=env.get("FLOTILLA_OIDC_NAME_CLAIM", "sub"),
        )

    def _client(self) -> jwt.PyJWKClient:
        if "client" not in self._jwks:
            url = self.jwks_url or _discover(self.issuer)
            self._jwks["client"] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)
        return self._jwks["client"]

    def verify(self, token: str) -> Principal:
        """Blocking (may fetch the JWKS); raises HttpError 401."""
        try:
            key = self._client().get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise HttpError(401, "the ID token has expired; get a new one") from None
        except jwt.InvalidAudienceError:
            raise HttpError(401, "the ID token is not for this API (audience)") from None
        except jwt.InvalidIssuerError:
            raise HttpError(401, "the ID token is from another issuer") from None
        except jwt.PyJWKClientConnectionError:
            raise HttpError(503, "the identity provider's keys are unreachable") from None
        except jwt.PyJWTError:
            raise HttpError(401, "the ID token is not valid (signature or format)") from None
        name = claims.get(self.name_claim)
        if not isinstance(name, str) or not name:
            raise HttpError(401, f"the ID token has no {self.name_claim!r} claim")
        groups = claims.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            raise HttpError(401, f"the ID token's {self.groups_claim!r} claim is not a list")
        return Principal(name=name, via="oidc", groups=tuple(str(g) for g in groups))


def _discover(issuer: str) -> str:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (https issuer)
        document: dict[str, Any] = json.load(response)
    return str(document["jwks_uri"])


@dataclass(frozen=True)
class Auth:
    """Accepted credentials: API tokens and OIDC ID tokens (`Authorization: Bearer`), and
    the webhook's HMAC-signed requests and shared token (principal `webhook`). `anonymous`
    (only from --insecure-no-auth) lets a request without credentials in as `anonymous`
    (credentials that are sent are still checked)."""

    secret: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    anonymous: bool = False
    window: int = WINDOW_SECONDS
    nonces: NonceStore = field(default_factory=MemoryNonces, compare=False)
    store: Store | None = field(default=None, compare=False)
    oidc: Oidc | None = None

    @classmethod
    def from_env(cls, *, anonymous: bool = False, store: Store | None = None) -> Auth:
        window = os.environ.get(WINDOW_ENV, "") or str(WINDOW_SECONDS)
        if not window.isdecimal() or not 1 <= int(window) <= 3600:
            raise usage(f"{WINDOW_ENV} must be a number of seconds from 1 to 3600")
        return cls(
            secret=os.environ.get(SECRET_ENV, ""),
            token=os.environ.get(TOKEN_ENV, ""),
            anonymous=anonymous,
            window=int(window),
            store=store,
            oidc=Oidc.from_env(),
        )

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.token or self.store or self.oidc)

    async def principal(self, method: str, path: str, headers: Any, body: bytes) -> Principal:
        """The caller, or HttpError: 401, 409 for a signed request seen before."""
        if self.secret and SIGNATURE_HEADER in headers:
            await self._check_signature(method, path, headers, body)
            return Principal(name=WEBHOOK_PRINCIPAL, via="webhook-secret")
        bearer = headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            return await self._bearer(bearer[len("Bearer ") :].strip())
        if self.anonymous:
            return Principal(name="anonymous", via="anonymous")
        raise HttpError(401, f"missing credentials: send {' or '.join(self._ways())}")

    def _ways(self) -> list[str]:
        ways = [f"{SIGNATURE_HEADER}, {TIMESTAMP_HEADER} and {NONCE_HEADER}"] * bool(self.secret)
        if self.token or self.store or self.oidc:
            ways.append("Authorization: Bearer <token>")
        return ways or ["credentials (none are configured)"]

    async def _bearer(self, value: str) -> Principal:
        if self.store is not None and value.startswith(TOKEN_PREFIX):
            try:
                info = await asyncio.to_thread(self.store.verify_token, value)
            except Exception:  # the database is down: not the caller's fault
                log.exception("cannot check an API token")
                raise HttpError(503, "the API's token store is unavailable; retry later") from None
            if info is None:
                raise HttpError(401, "unknown or revoked API token")
            return Principal(name=info.name, via="token", groups=tuple(info.groups))
        if self.token and hmac.compare_digest(value.encode(), self.token.encode()):
            return Principal(name=WEBHOOK_PRINCIPAL, via="webhook-token")
        if self.oidc is not None and value.count(".") == 2:
            return await asyncio.to_thread(self.oidc.verify, value)
        raise HttpError(401, "bad bearer token")

    async def _check_signature(self, method: str, path: str, headers: Any, body: bytes) -> None:
        sent = headers.get(SIGNATURE_HEADER, "").strip().lower()
        timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
        nonce = headers.get(NONCE_HEADER, "").strip()
        if not sent.startswith(f"{VERSION}="):
            raise HttpError(
                401, f"bad {SIGNATURE_HEADER}: expected {VERSION}=<hex> (docs/webhooks.md)"
            )
        if not _TIMESTAMP_RE.match(timestamp):
            raise HttpError(401, f"missing or bad {TIMESTAMP_HEADER}: expected unix seconds")
        if not NONCE_RE.match(nonce):
            raise HttpError(
                401, f"missing or bad {NONCE_HEADER}: expected 16-128 letters, digits, '_', '-'"
            )
        skew = time.time() - int(timestamp)
        if abs(skew) > self.window:
            raise HttpError(
                401,
                f"expired signature: {TIMESTAMP_HEADER} is {skew:+.0f}s from the server's "
                f"clock, more than the {self.window}s allowed",
            )
        key = headers.get(KEY_HEADER, "")
        expected = signature(self.secret, canonical(method, path, key, timestamp, nonce, body))
        if not hmac.compare_digest(expected.encode(), sent.encode()):
            raise HttpError(
                401,
                f"bad {SIGNATURE_HEADER}: it must sign this method, path, {KEY_HEADER}, "
                "timestamp, nonce and body (docs/webhooks.md)",
            )
        try:
            fresh = await self.nonces.remember(nonce, until=int(timestamp) + self.window)
        except NoncesFull:
            raise HttpError(
                503, "too many signed requests within the window; retry later"
            ) from None
        if not fresh:
            raise HttpError(409, f"replayed request: {NONCE_HEADER} {nonce!r} was used before")
