"""The DR rules as plain functions: policy checks, admission, epochs, the watch's
decision, the blast radius, WAL positions and RTO."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from fleet.dr import (
    ActiveOperation,
    BeginRequest,
    DnsRecord,
    DrAppState,
    DrMember,
    DrPolicy,
    GuardRequest,
    GuardState,
    OpKind,
    Role,
    WatchSettings,
    WatchSignals,
)
from fleet.dr_rules import (
    begin_problem,
    decide,
    default_target,
    format_lsn,
    guard_admit,
    lsn_gap,
    object_epoch_problem,
    parse_lsn,
    rto_seconds,
    stale_epoch,
)
from fleet.models import CredentialRef

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def policy(**changes: object) -> DrPolicy:
    data: dict[str, object] = dict(
        app="shop",
        members=[
            DrMember(cluster="eu", role=Role.PRIMARY, database="shop-eu", endpoint="eu.lab"),
            DrMember(cluster="us", database="shop-us", endpoint="us.lab"),
        ],
        dns=DnsRecord(credential=CredentialRef(context="mgmt"), name="shop", dns_name="shop.db"),
    )
    data.update(changes)
    return DrPolicy.model_validate(data)


def state(**changes: object) -> DrAppState:
    s = DrAppState(policy=policy(), primary="eu", epoch=3)
    return s.model_copy(update=changes)


def test_policy_needs_one_primary_two_clusters_distinct_names() -> None:
    assert policy().home == "eu"
    member = DrMember(cluster="eu", database="x", endpoint="x")
    for members, words in [
        ([member], "at least two"),
        ([member, member], "listed twice"),
        (
            [
                DrMember(cluster="eu", database="a", endpoint="a"),
                DrMember(cluster="us", database="b", endpoint="b"),
            ],
            "exactly one cluster must be primary",
        ),
    ]:
        with pytest.raises(ValidationError, match=words):
            policy(members=members)
    with pytest.raises(ValidationError, match="application name"):
        policy(app="Shop!")


def test_begin_refuses_targets_outside_the_policy_and_the_primary() -> None:
    s = state()
    ok = BeginRequest(app="shop", holder="h", kind=OpKind.FAILOVER, target="us")
    assert begin_problem(s, ok) is None
    outside = ok.model_copy(update={"target": "ap"})
    assert "not a cluster of shop" in (begin_problem(s, outside) or "")
    primary = ok.model_copy(update={"target": "eu"})
    assert "already is the primary" in (begin_problem(s, primary) or "")
    back = BeginRequest(app="shop", holder="h", kind=OpKind.FAILBACK, target="eu")
    assert "home cluster" in (begin_problem(s, back) or "")
    assert begin_problem(state(primary="us"), back) is None
    assert default_target(s, OpKind.SWITCHOVER) == "us"
    assert default_target(state(primary="us"), OpKind.FAILBACK) == "eu"


def test_a_stale_epoch_or_a_finished_holder_may_not_write() -> None:
    active = ActiveOperation(holder="h", kind=OpKind.FAILOVER, target="us", epoch=3, started_at=T0)
    s = state(operation=active)
    assert stale_epoch(s, "h", 3) is None
    assert "stale" in (stale_epoch(s, "h", 2) or "")
    assert "no longer holds" in (stale_epoch(state(), "h", 3) or "")
    assert "no longer holds" in (stale_epoch(s, "other", 3) or "")
    assert object_epoch_problem(4, 3, "shop-eu") is not None
    assert object_epoch_problem(3, 3, "shop-eu") is None


def signals(hub: bool, standby: bool | None, client: bool | None, **kw: object) -> WatchSignals:
    return WatchSignals(at=T0, hub_ok=hub, standby_ok=standby, client_ok=client, **kw)


def test_quorum_hub_only_partition_never_fails_over() -> None:
    settings = WatchSettings(failure_rounds=1)
    args = dict(settings=settings, automatic=True, operation_running=False, last_failover_at=None)
    partition = signals(False, True, True, standby_ready=True)
    assert not decide(signals=partition, consecutive_down=99, **args).failover  # type: ignore[arg-type]
    # the hub alone, the others unknown: still one vote
    alone = signals(False, None, None, standby_ready=True)
    assert not decide(signals=alone, consecutive_down=99, **args).failover  # type: ignore[arg-type]
    dark = signals(False, False, False, standby_ready=True)
    assert decide(signals=dark, consecutive_down=1, **args).failover  # type: ignore[arg-type]
    # cut off from the hub and the standby, but clients still write: no failover
    isolated = signals(False, False, True, standby_ready=True)
    decision = decide(signals=isolated, consecutive_down=99, **args)  # type: ignore[arg-type]
    assert not decision.failover and "clients still write" in decision.reason


def test_rounds_cooldown_standby_and_automatic_gate_the_decision() -> None:
    dark = signals(False, False, False, standby_ready=True)
    settings = WatchSettings(failure_rounds=3, cooldown_seconds=60)
    base = dict(settings=settings, automatic=True, operation_running=False, last_failover_at=None)
    assert not decide(signals=dark, consecutive_down=2, **base).failover  # type: ignore[arg-type]
    assert decide(signals=dark, consecutive_down=3, **base).failover  # type: ignore[arg-type]
    for change, words in [
        ({"automatic": False}, "automatic failover is off"),
        ({"operation_running": True}, "already running"),
        ({"last_failover_at": T0 - timedelta(seconds=10)}, "cooling down"),
    ]:
        decision = decide(signals=dark, consecutive_down=3, **{**base, **change})  # type: ignore[arg-type]
        assert not decision.failover and words in decision.reason
    no_standby = signals(False, False, False, standby_ready=False)
    assert not decide(signals=no_standby, consecutive_down=3, **base).failover  # type: ignore[arg-type]


def test_blast_radius_admits_n_per_window_then_asks_for_approval() -> None:
    guard = GuardState()
    req = GuardRequest(app="a", max_automatic=2, interval_seconds=600)
    assert guard_admit(guard, req, T0)[0]
    assert guard_admit(guard, req.model_copy(update={"app": "b"}), T0)[0]
    granted, why = guard_admit(guard, req.model_copy(update={"app": "c"}), T0)
    assert not granted and "flotilla dr approve c" in why
    approved = req.model_copy(update={"app": "c", "approved_by": "ops"})
    assert guard_admit(guard, approved, T0)[0]
    later = T0 + timedelta(seconds=601)
    assert guard_admit(guard, req.model_copy(update={"app": "d"}), later)[0]


def test_lsn_arithmetic_and_rto() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("0/3000A28")) == "0/3000A28"
    assert lsn_gap("0/3000100", "0/3000000") == 0x100
    assert lsn_gap("0/3000000", "0/3000100") == 0
    assert lsn_gap("", "0/1") is None
    with pytest.raises(ValueError):
        parse_lsn("nonsense")
    assert rto_seconds(T0, T0 + timedelta(seconds=4.5)) == 4.5
    assert rto_seconds(None, T0) is None
