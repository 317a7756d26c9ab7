"""Waiting inside an activity until awaited objects settle: the one poll loop.

Each look at the objects says whether they are done, what is waited for (a sentence, sent
as the heartbeat, so the Temporal UI shows it) and a progress marker. The wait fails
non-retryably when the overall timeout passes, or when the marker has not changed for the
progress deadline (`FLOTILLA_PROGRESS_DEADLINE`, default 10m: seconds or `90s`, `10m`,
`1h`): a node that stays NotReady fails its cluster with that reason instead of holding it
for the whole timeout. A cancellation (seen through heartbeating) ends the wait at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from fleet.durations import format_duration, parse_duration

T = TypeVar("T")

POLL_SECONDS = 0.5
# A look that awaits the same as the last heartbeat said is not sent again before this
# many seconds (a poll is more frequent; each heartbeat costs the worker).
HEARTBEAT_EVERY = 2.0
PROGRESS_DEADLINE_ENV = "FLOTILLA_PROGRESS_DEADLINE"
DEFAULT_PROGRESS_DEADLINE = 600.0


@dataclass(frozen=True)
class Look(Generic[T]):
    """One reading of what is awaited."""

    value: T
    done: bool
    waiting_for: str  # e.g. "MachineDeployment a-md-0 at v1.31.0: 2/2 updated, 1/2 ready"
    progress: Hashable  # any change counts as progress and restarts the progress clock


def progress_deadline() -> float:
    """Seconds without progress before a wait fails; a bad setting fails non-retryably."""
    text = os.environ.get(PROGRESS_DEADLINE_ENV, "")
    if not text:
        return DEFAULT_PROGRESS_DEADLINE
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ApplicationError(
            f"{PROGRESS_DEADLINE_ENV}: {exc}", type="BadSetting", non_retryable=True
        ) from None


def wait_until(
    look: Callable[[], Look[T]],
    *,
    cluster: str,
    goal: str,
    timeout_seconds: float,
    timeout_type: str,
    poll_seconds: float = POLL_SECONDS,
) -> T:
    """Polls `look` until done; returns the last value.

    `look` raises for a failure it sees (e.g. a condition with severity Error). Fails with
    `timeout_type` after `timeout_seconds`, or with `NoProgress` when the progress marker
    stands still for the progress deadline; both non-retryable and naming what was awaited.
    """
    stall_limit = progress_deadline()
    started = time.monotonic()
    marker: Hashable = None
    moved_at = started
    beat_at, said = -HEARTBEAT_EVERY, ""
    while True:
        seen = look()
        if seen.done:
            return seen.value
        now = time.monotonic()
        if seen.progress != marker:
            marker, moved_at = seen.progress, now
        if seen.waiting_for != said or now - beat_at >= HEARTBEAT_EVERY:
            activity.heartbeat(f"waiting for {seen.waiting_for}")
            beat_at, said = now, seen.waiting_for
        if now - moved_at >= stall_limit:
            raise ApplicationError(
                f"{cluster}: no progress for {format_duration(round(now - moved_at))} "
                f"waiting for {seen.waiting_for}",
                type="NoProgress",
                non_retryable=True,
            )
        if now - started > timeout_seconds:
            raise ApplicationError(
                f"{cluster}: {goal} not reached after {format_duration(round(timeout_seconds))} "
                f"(waiting for {seen.waiting_for})",
                type=timeout_type,
                non_retryable=True,
            )
        activity.wait_for_cancelled_sync(poll_seconds)
        if activity.is_cancelled():
            raise ApplicationError(f"{cluster}: wait cancelled", type="Cancelled")
