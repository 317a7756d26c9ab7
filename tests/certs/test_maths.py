"""The pure certificate maths: thresholds, bundles, expiry verdicts, renewal due dates and
the CA rotation's phase rules (each step keeps every consumer able to connect)."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.certs import (
    due,
    entry_of,
    expiring,
    fingerprint,
    issuer_among,
    load_bundle,
    parse_threshold,
    remaining,
    soonest,
    status_of,
    summarize,
)
from fleet.certs_models import CertEntry, CertReport, CertSource, CertStatus
from fleet.certs_targets import (
    STATES,
    UNDO,
    CaRotateTarget,
    CertRenewTarget,
    RotationPhase,
    precondition,
    problems_after,
    published,
)
from tests.certs.pki import ca, leaf, pem

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def entry(days: float, source: CertSource = CertSource.TLS_SECRET, **kw: object) -> CertEntry:
    return CertEntry(source=source, name=f"x{days}", not_after=NOW + days * DAY, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90", 90)])
def test_threshold(text: str, seconds: float) -> None:
    assert parse_threshold(text) == seconds


@pytest.mark.parametrize("text", ["0", "0d", "-1d", "soon", "30 days", "4000d", ""])
def test_bad_threshold(text: str) -> None:
    with pytest.raises(ValueError):
        parse_threshold(text)


def test_bundle_pem_and_base64_and_garbage() -> None:
    a, b = ca("a")[0], ca("b")[0]
    bundle = pem(a, b)
    assert [fingerprint(c) for c in load_bundle(bundle)] == [fingerprint(a), fingerprint(b)]
    assert len(load_bundle(base64.b64encode(bundle))) == 2
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" + pem(a)
    assert len(load_bundle(broken)) == 1
    assert load_bundle(b"") == [] and load_bundle("not base64 at all!") == []


def test_entry_and_issuer() -> None:
    old, new = ca("old"), ca("new")
    served = leaf(new, days=5)
    e = entry_of(served, source=CertSource.SERVING, name="https://127.0.0.1:1")
    assert not e.is_ca and e.issuer == "CN=new" and e.fingerprint == fingerprint(served)
    assert entry_of(old[0], source=CertSource.HUB_CA, name="ctx").is_ca
    assert issuer_among(served, [old[0], new[0]]) == fingerprint(new[0])
    assert issuer_among(served, [old[0]]) == ""


def test_soonest_expiring_and_status() -> None:
    entries = [entry(90), entry(10), entry(-2), entry(45)]
    assert soonest(entries) == entries[2]
    assert soonest([]) is None
    assert [e.name for e in expiring(entries, NOW, 30 * 86400)] == ["x-2", "x10"]
    alert = 60 * 86400
    assert status_of(None, NOW, alert) == CertStatus.UNKNOWN
    assert status_of(NOW - DAY, NOW, alert) == CertStatus.EXPIRED
    assert status_of(NOW + 59 * DAY, NOW, alert) == CertStatus.EXPIRING
    assert status_of(NOW + 61 * DAY, NOW, alert) == CertStatus.OK


def test_summary_judged_at_scan_time() -> None:
    report = CertReport(
        cluster="a", scanned_at=NOW, entries=[entry(90), entry(20, CertSource.SERVING)]
    )
    summary = summarize(report, 60 * 86400)
    assert summary.status == CertStatus.EXPIRING
    assert summary.soonest == NOW + 20 * DAY
    assert summary.source == "apiserver x20"
    assert (summary.entries, summary.expiring) == (2, 1)
    assert summarize(report, 10 * 86400).status == CertStatus.OK


def test_due() -> None:
    assert due(entry(10), NOW, 30 * 86400)
    assert not due(entry(40), NOW, 30 * 86400)
    assert due(entry(40, renewal_time=NOW - DAY), NOW, 30 * 86400)


def test_remaining() -> None:
    assert remaining(NOW + 29 * DAY + timedelta(hours=5), NOW) == "in 29d"
    assert remaining(NOW + timedelta(hours=5, minutes=3), NOW) == "in 5h"
    assert remaining(NOW - 2 * DAY, NOW) == "expired 2d ago"
    assert remaining(NOW + timedelta(seconds=20), NOW) == "in 20s"


def test_targets() -> None:
    assert CertRenewTarget(control_plane=False, cert_manager=False).problems()
    assert CertRenewTarget(within="7d").within == 7 * 86400  # type: ignore[arg-type]
    for phase in RotationPhase:
        assert CaRotateTarget(phase=phase).undo("").phase == UNDO[phase]
        assert UNDO[UNDO[phase]] == phase
    with pytest.raises(ValueError):
        CaRotateTarget(phase="swap")  # type: ignore[arg-type]


# --- rotation ---------------------------------------------------------------------------

OLD, NEW = "o" * 64, "n" * 64
ROLES = {"old": OLD, "new": NEW}
BEFORE = (frozenset({OLD}), OLD)  # (trust, signer) before any phase


def state(phase: RotationPhase) -> tuple[frozenset[str], str]:
    s = STATES[phase]
    return frozenset(ROLES[r] for r in s.trust), ROLES[s.signer]


def allowed(phase: RotationPhase, at: tuple[frozenset[str], str]) -> bool:
    trust, signer = at
    return not precondition(phase, [set(trust)], signer, OLD, NEW)


def test_phases_in_order_are_allowed_and_out_of_order_refused() -> None:
    at = BEFORE
    for phase in (RotationPhase.ADD, RotationPhase.REISSUE, RotationPhase.REMOVE):
        assert allowed(phase, at), phase
        at = state(phase)
        assert published(phase, [set(at[0])], at[1], OLD, NEW)
        assert not problems_after(phase, {"c": set(at[0])}, at[1], OLD, NEW)
    assert not allowed(RotationPhase.REISSUE, BEFORE)  # the new CA is trusted nowhere yet
    assert not allowed(RotationPhase.REMOVE, state(RotationPhase.ADD))  # nothing signed by new
    assert not allowed(RotationPhase.WITHDRAW, state(RotationPhase.REISSUE))
    assert not allowed(RotationPhase.REVERT, state(RotationPhase.REMOVE))
    # One consumer left behind blocks the next phase.
    trusted = [{OLD, NEW}, {OLD}]
    assert "run phase add first" in precondition(RotationPhase.REISSUE, trusted, OLD, OLD, NEW)
    problems = problems_after(RotationPhase.ADD, {"a": {OLD, NEW}, "b": {OLD}}, OLD, OLD, NEW)
    assert len(problems) == 1 and problems[0].startswith("b trusts")


@given(st.lists(st.sampled_from(list(RotationPhase)), max_size=12))
def test_every_allowed_step_keeps_every_consumer_connected(phases: list[RotationPhase]) -> None:
    """Whatever order an operator runs phases in, each step the rules admit keeps all four
    mixes of (trust before | after) x (leaf signed before | after) verifying: a consumer
    that has not yet received the new trust, or a leaf not yet re-issued, still connects."""
    at = BEFORE
    for phase in phases:
        if not allowed(phase, at):
            continue
        after = state(phase)
        for trust, signer in itertools.product((at[0], after[0]), (at[1], after[1])):
            assert signer in trust, (phase, at, after)
        at = after
