"""One readable line per mistake: turn what can go wrong under a CLI command into a
`CliError` (message + exit code), never a traceback.

Exit codes: 2 for usage (bad flags, selectors, labels, kubeconfig paths, contexts), 1 for an
operation that failed (Temporal unreachable, unknown cluster, lock held, workflow failed).
"""

from __future__ import annotations

from temporalio.client import (
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.service import RPCError, RPCStatusCode

from fleet.selectors import SelectorError

USAGE = 2
FAILED = 1


class CliError(Exception):
    """An error the CLI prints as one line before exiting with `code`."""

    def __init__(self, message: str, *, code: int = FAILED):
        super().__init__(message)
        self.message = message
        self.code = code


def usage(message: str) -> CliError:
    return CliError(message, code=USAGE)


def translate(exc: BaseException, *, address: str = "") -> CliError | None:
    """The CliError for an exception a person can act on; None for a genuine bug."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, SelectorError):
        return usage(f"bad label selector: {exc}")
    if isinstance(exc, RPCError):
        return _rpc_error(exc, address=address)
    if isinstance(exc, WorkflowUpdateFailedError | WorkflowFailureError):
        return CliError(failure_message(exc))
    if isinstance(exc, WorkflowQueryFailedError):
        return CliError(f"query failed: {_first_line(str(exc))}")
    if isinstance(exc, FailureError):
        return CliError(failure_message(exc))
    if isinstance(exc, ConnectionError | TimeoutError):
        return CliError(_unreachable(address, exc))
    if isinstance(exc, RuntimeError) and "Failed client connect" in str(exc):
        return CliError(_unreachable(address, exc))
    return None


def failure_message(exc: BaseException) -> str:
    """The deepest application error's message in a Temporal failure chain: that is the
    part written for a person (e.g. `ClusterLocked: eu-prod-1 is locked by rollout:...`)."""
    deepest: BaseException | None = None
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ApplicationError):
            deepest = current
        current = current.__cause__
    if deepest is None:
        current = exc
        while current.__cause__ is not None:
            current = current.__cause__
        deepest = current
    text = _first_line(str(deepest)) or type(deepest).__name__
    if isinstance(deepest, ApplicationError) and deepest.type and deepest.type not in text:
        return f"{deepest.type}: {text}"
    return text


def _rpc_error(exc: RPCError, *, address: str) -> CliError:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return CliError(_first_line(exc.message) or "not found")
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return CliError(_unreachable(address, exc))
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return usage(_first_line(exc.message))
    return CliError(f"Temporal refused the request ({exc.status.name}): {_first_line(exc.message)}")


def _unreachable(address: str, exc: BaseException) -> str:
    text = str(exc).lower()
    if "refused" in text:
        reason = "connection refused"
    elif "timed out" in text or "deadline" in text or isinstance(exc, TimeoutError):
        reason = "timed out"
    else:
        reason = _first_line(str(exc))[:100]
    where = address or "the configured Temporal address"
    return (
        f"cannot reach Temporal at {where} ({reason}); "
        "start it with `flotilla up` or set TEMPORAL_ADDRESS / --address"
    )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # Long on purpose: messages such as MissingPermissions list everything to fix.
    return lines[0][:2000] if lines else ""
