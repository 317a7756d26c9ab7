"""Durations as people write them (`0`, `90s`, `10m`, `1.5h`, `2d`), parsed in one place
for the CLI, the webhook and the messages that carry them (as seconds)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `text`; a bare number is seconds. Raises ValueError naming the text."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r} (expected like 0, 30s, 10m, 1h, 2d)")
    return float(match[1]) * _UNITS[match[2]]


def format_duration(seconds: float) -> str:
    """The shortest exact form: 1800 -> 30m, 90 -> 90s, 0 -> 0."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:.0f}{unit}"
    return f"{seconds:g}s" if seconds else "0"


def _seconds(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


# A field in seconds that also accepts the text forms above (bounds go in Field(...)).
Duration = Annotated[
    float,
    BeforeValidator(_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION_RE.pattern},
            ],
            "description": "seconds, or text like 30s, 10m, 1h, 2d",
        }
    ),
]
