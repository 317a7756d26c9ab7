"""The rules of disaster recovery as plain functions: when the watch fails over, the
fleet-wide budget of automatic failovers, the fencing epoch, WAL positions, RTO and RPO."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fleet.dr import (
    ActiveOperation,
    AppSummary,
    BeginRequest,
    DrAppState,
    GuardRequest,
    GuardState,
    OpKind,
    WatchSettings,
    WatchSignals,
)

# --- WAL positions ---------------------------------------------------------------------


def parse_lsn(text: str) -> int:
    """A PostgreSQL LSN (`16/B374D848`: high and low 32 bits in hex) as a byte position."""
    high, sep, low = text.strip().partition("/")
    if not sep:
        raise ValueError(f"bad LSN {text!r}: expected X/Y in hex")
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        raise ValueError(f"bad LSN {text!r}: expected X/Y in hex") from None


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def lsn_gap(source: str, target: str) -> int | None:
    """Bytes of WAL `target` has not replayed from `source` (0 when caught up or ahead);
    None when either is unknown."""
    if not source or not target:
        return None
    return max(0, parse_lsn(source) - parse_lsn(target))


def caught_up(source: str, target: str) -> bool:
    gap = lsn_gap(source, target)
    return gap == 0


# --- RTO -------------------------------------------------------------------------------


def rto_seconds(down_since: datetime | None, writable_at: datetime | None) -> float | None:
    """Seconds without a writable primary: from the last moment the old primary was known
    to take writes to the first verified write on the new one."""
    if down_since is None or writable_at is None:
        return None
    return max(0.0, (writable_at - down_since).total_seconds())


# --- admission of an operation ---------------------------------------------------------


def begin_problem(state: DrAppState, req: BeginRequest) -> str | None:
    """Why the application cannot start this operation now (None: it can). A running
    operation is checked separately (its holder may have died)."""
    policy = state.policy
    if not policy.has(req.target):
        clusters = ", ".join(m.cluster for m in policy.members)
        return f"{req.target!r} is not a cluster of {policy.app}'s DR policy ({clusters})"
    if req.kind == OpKind.FAILBACK and state.primary == policy.home:
        return f"{policy.app} already runs on its home cluster {policy.home}; nothing to fail back"
    if req.require_not_primary and req.target == state.primary:
        return f"{req.target} already is the primary of {policy.app}"
    return None


def operation_conflict(active: ActiveOperation | None, holder: str) -> str | None:
    if active is None or active.holder == holder:
        return None
    return (
        f"{active.kind} {active.holder} is running (epoch {active.epoch}, since "
        f"{active.started_at:%H:%M:%S} UTC); wait for it or cancel it, then retry"
    )


def stale_epoch(state: DrAppState, holder: str, epoch: int) -> str | None:
    """Why a write step under `epoch` must not act (None: it may): a newer operation has
    begun, or this one has finished."""
    if epoch != state.epoch:
        return f"epoch {epoch} is stale: {state.policy.app} is at epoch {state.epoch}"
    if state.operation is None or state.operation.holder != holder:
        return f"{holder} no longer holds {state.policy.app} (epoch {epoch} has ended)"
    return None


def object_epoch_problem(found: int, epoch: int, what: str) -> str | None:
    """A write must not overwrite an object written under a newer epoch."""
    if found > epoch:
        return f"{what} was written under epoch {found}, newer than this run's {epoch}"
    return None


# --- the watch -------------------------------------------------------------------------


def down_votes(signals: WatchSignals) -> int:
    """Independent signals saying the primary does not take writes; unknown ones abstain."""
    return sum(1 for ok in (signals.hub_ok, signals.standby_ok, signals.client_ok) if ok is False)


def primary_down(signals: WatchSignals, settings: WatchSettings) -> bool:
    return down_votes(signals) >= settings.quorum


@dataclass(frozen=True)
class Decision:
    failover: bool
    reason: str


def decide(
    *,
    signals: WatchSignals,
    consecutive_down: int,
    settings: WatchSettings,
    automatic: bool,
    operation_running: bool,
    last_failover_at: datetime | None,
) -> Decision:
    """Whether the watch starts a failover after this round (`consecutive_down` counts
    this round). A partition only the hub sees is one vote and never reaches quorum; and
    while the client's probe still writes to the primary, the application works for its
    clients: no failover, whatever the other signals say (a primary cut off from the hub
    and its standby but not from its clients)."""
    votes = down_votes(signals)
    if signals.client_ok and votes >= settings.quorum:
        return Decision(False, f"{votes} signals say down, but clients still write to it")
    if votes < settings.quorum:
        if votes:
            return Decision(False, f"{votes} signal(s) say down, below quorum {settings.quorum}")
        return Decision(False, "primary takes writes")
    if consecutive_down < settings.failure_rounds:
        return Decision(
            False,
            f"primary down {consecutive_down}/{settings.failure_rounds} rounds ({votes} votes)",
        )
    if not automatic:
        return Decision(False, "primary down; automatic failover is off for this application")
    if operation_running:
        return Decision(False, "primary down; an operation is already running")
    if not signals.standby_ready:
        return Decision(False, "primary down, but no standby is ready to take over")
    if last_failover_at is not None:
        wait = last_failover_at + timedelta(seconds=settings.cooldown_seconds) - signals.at
        if wait > timedelta(0):
            return Decision(False, f"primary down; cooling down {wait.total_seconds():.0f}s more")
    return Decision(True, f"primary down for {consecutive_down} rounds ({votes} of 3 signals)")


# --- the fleet-wide blast radius -------------------------------------------------------


def guard_admit(state: GuardState, req: GuardRequest, now: datetime) -> tuple[bool, str]:
    """Admits an automatic failover while fewer than `max_automatic` were admitted in the
    last `interval_seconds` (an operator's approval always is); records it when admitted."""
    state.max_automatic, state.interval_seconds = req.max_automatic, req.interval_seconds
    horizon = now - timedelta(seconds=state.interval_seconds)
    state.granted = [(app, at) for app, at in state.granted if at > horizon]
    if req.approved_by:
        state.granted.append((req.app, now))
        return True, f"approved by {req.approved_by}"
    if len(state.granted) >= state.max_automatic:
        apps = ", ".join(app for app, _ in state.granted)
        return False, (
            f"{len(state.granted)} automatic failovers in the last "
            f"{state.interval_seconds:.0f}s ({apps}), the fleet-wide limit: approve it with "
            f"`flotilla dr approve {req.app}`"
        )
    state.granted.append((req.app, now))
    return True, f"{len(state.granted)} of {state.max_automatic} in the interval"


def default_target(state: DrAppState | AppSummary, kind: OpKind) -> str:
    """The cluster an operation promotes when none is named: home for failback, else the
    first other member of the policy."""
    if kind == OpKind.FAILBACK:
        return state.policy.home
    others = [m.cluster for m in state.policy.members if m.cluster != state.primary]
    return others[0] if others else ""
