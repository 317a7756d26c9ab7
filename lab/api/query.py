"""Query parameter parsing shared by the handlers."""

from __future__ import annotations

from collections.abc import Mapping

from lab.store import ApiError


def int_param(query: Mapping[str, str], name: str) -> int:
    """A non-negative integer query parameter (0 when absent); 400 when malformed."""
    value = query.get(name) or "0"
    if not value.isdigit():
        raise ApiError(400, "BadRequest", f"{name} must be a non-negative integer: {value!r}")
    return int(value)
