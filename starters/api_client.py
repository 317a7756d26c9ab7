"""The CLI's way through Flotilla's API (starters/api.py) instead of to Temporal.

Used by default when FLOTILLA_API is set (the API's base URL), with FLOTILLA_TOKEN (an
API token or an ID token) or FLOTILLA_TOKEN_FILE (a file holding one, e.g. the OIDC ID
token a login helper keeps fresh; read on every command). The API's refusals become the
CLI's one-line errors: 401/403 exit 1 with the API's reason, 4xx input errors exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from starters.errors import CliError, usage

API_ENV = "FLOTILLA_API"
TOKEN_ENV = "FLOTILLA_TOKEN"
TOKEN_FILE_ENV = "FLOTILLA_TOKEN_FILE"
TIMEOUT = aiohttp.ClientTimeout(total=300, connect=10)


def configured() -> bool:
    return bool(os.environ.get(API_ENV))


class ApiClient:
    def __init__(self, base: str, token: str):
        self.base = base.rstrip("/")
        self._token = token

    @classmethod
    def from_env(cls) -> ApiClient:
        base = os.environ.get(API_ENV, "")
        if not base.startswith(("http://", "https://")):
            raise usage(f"{API_ENV} must be the API's URL, e.g. https://flotilla.example.com")
        token = os.environ.get(TOKEN_ENV, "")
        path = os.environ.get(TOKEN_FILE_ENV, "")
        if not token and path:
            try:
                token = Path(path).read_text().strip()
            except OSError as exc:
                raise usage(f"cannot read {TOKEN_FILE_ENV} {path}: {exc.strerror}") from None
        if not token:
            raise usage(f"{API_ENV} is set: set {TOKEN_ENV} or {TOKEN_FILE_ENV} too")
        return cls(base, token)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str = "",
        params: dict[str, str] | None = None,
    ) -> Any:
        """The JSON answer of a 2xx; CliError with the API's one-line reason otherwise."""
        headers = {"Authorization": f"Bearer {self._token}"}
        if key:
            headers["Idempotency-Key"] = key
        url = URL(self.base + path, encoded=True)
        if params:
            url = url.with_query(params)
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.request(method, url, json=body, headers=headers) as response,
            ):
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else "timed out"
            raise CliError(f"the API at {self.base} is unreachable ({reason})") from None
        if status < 300:
            return answer
        message = answer.get("error") if isinstance(answer, dict) else None
        message = str(message or f"HTTP {status}")
        raise CliError(f"API: {message}", code=2 if status in (400, 422) else 1)
