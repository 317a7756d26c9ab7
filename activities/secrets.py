"""Secret references for event sinks, resolved only inside activities (never in history).

A reference is `env:NAME` (an environment variable of the worker) or `file:PATH` (a file,
e.g. a mounted Kubernetes Secret key; surrounding whitespace is dropped). Read at each
delivery, so a rotated Secret is picked up without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.exceptions import ApplicationError


def resolve_secret(ref: str, *, what: str) -> str:
    """The secret `ref` points at; a non-retryable error naming `what` (never the value)
    when the reference is malformed or points at nothing."""
    scheme, _, where = ref.partition(":")
    value = None
    if scheme == "env" and where:
        value = os.environ.get(where)
    elif scheme == "file" and where:
        path = Path(where)
        value = path.read_text().strip() if path.is_file() else None
    else:
        raise ApplicationError(
            f"{what}: not a secret reference (env:NAME or file:PATH)",
            type="BadSecretRef",
            non_retryable=True,
        )
    if not value:
        raise ApplicationError(
            f"{what}: {ref} is not set on this worker", type="SecretMissing", non_retryable=True
        )
    return value
