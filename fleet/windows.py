"""Maintenance windows: when a cluster may start a change.

A window is a set of weekdays and a daily time range in UTC, written either for people
(`Sat 02:00-06:00`, `Mon-Fri 22:00-02:00`, `daily 01:00-03:00`) or in a form that fits a
Kubernetes label value (`sat.0200-0600`, `mon-fri.2200-0200`, `daily.0100-0300`; list
days with `_`, e.g. `sat_sun.0000-0600`, or `,` in the spoken form). A range whose end is
not after its start runs past midnight (`22:00-02:00`), and the day names the day the
window opens; `00:00-00:00` is all day. Windows gate the start of a cluster's change, not
its end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_TIME = r"(\d{1,2}):?(\d{2})"
_RANGE_RE = re.compile(rf"^{_TIME}-{_TIME}$")
_DAY_IN_LIST = re.compile(r"[_,+]")


# A cluster label that gives the cluster its own maintenance window (wins over a rollout's).
WINDOW_LABEL = "flotilla.io/maintenance-window"


class WindowError(ValueError):
    """A window spec that does not parse; the message shows the accepted forms."""


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start_minute: int  # minutes after midnight UTC
    duration_minutes: int  # 1..1440

    def opening(self, now: datetime) -> tuple[datetime, datetime]:
        """The window containing `now`, else the next one: (start, end), start <= end."""
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        # Yesterday's window may still be open (ranges past midnight); a week covers the rest.
        for offset in range(-1, 8):
            start = midnight + timedelta(days=offset, minutes=self.start_minute)
            end = start + timedelta(minutes=self.duration_minutes)
            if start.weekday() in self.days and end > now:
                return start, end
        raise AssertionError("a window with at least one day opens within a week")

    def is_open(self, now: datetime) -> bool:
        return self.opening(now)[0] <= now

    def seconds_until_open(self, now: datetime) -> float:
        """0 while open, else seconds to the next opening."""
        start, _ = self.opening(now)
        return max(0.0, (start - now).total_seconds())


def parse_window(text: str) -> Window:
    """Parses either notation described in the module docstring; raises WindowError."""
    spec = text.strip().lower()
    if "." in spec and " " not in spec:
        days_text, _, range_text = spec.partition(".")
    elif " " in spec:
        days_text, _, range_text = spec.partition(" ")
    else:
        days_text, range_text = "daily", spec
    match = _RANGE_RE.match(range_text.strip())
    if not match:
        raise WindowError(
            f"cannot parse maintenance window {text!r} "
            "(expected like 'Sat 02:00-06:00', 'mon-fri.2200-0200' or 'daily 01:00-03:00')"
        )
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or end_h > 24 or start_m > 59 or end_m > 59 or (end_h == 24 and end_m):
        raise WindowError(f"bad time in maintenance window {text!r}")
    start = start_h * 60 + start_m
    end = end_h * 60 + end_m
    duration = (end - start) % 1440 or 1440
    return Window(_parse_days(days_text.strip(), text), start, duration)


def _parse_days(text: str, original: str) -> frozenset[int]:
    if text in ("daily", "*", "all"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in _DAY_IN_LIST.split(text):
        first, _, last = part.strip().partition("-")
        try:
            lo = DAYS.index(first[:3])
            hi = DAYS.index(last[:3]) if last else lo
        except ValueError:
            raise WindowError(
                f"unknown day {part!r} in maintenance window {original!r} "
                "(use mon..sun, ranges like mon-fri, or daily)"
            ) from None
        days.update((lo + i) % 7 for i in range((hi - lo) % 7 + 1))
    return frozenset(days)
