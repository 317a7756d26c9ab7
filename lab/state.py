"""The lab state file: CA, clusters (ports, tokens, users, faults) and every object store,
so a restarted lab comes back with the same endpoints, credentials and objects.

It holds secrets, so it is written atomically with mode 0600.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.kubeconfig import write_private

FORMAT = 1


def save(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(dict(data, format=FORMAT), separators=(",", ":")))


def load(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when the file does not exist; ValueError when unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read lab state file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"lab state file {path} has an unknown format")
    return data
