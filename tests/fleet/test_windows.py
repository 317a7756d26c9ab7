from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.windows import WindowError, parse_window

SAT = datetime(2026, 11, 21, tzinfo=UTC)  # a Saturday

windows = st.builds(
    lambda days, start, end: parse_window(
        f"{'_'.join(days)}.{start // 60:02d}{start % 60:02d}-{end // 60:02d}{end % 60:02d}"
    ),
    st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1),
    st.integers(0, 1439),
    st.integers(0, 1439),
)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)


def test_both_notations_agree():
    assert parse_window("Sat 02:00-06:00") == parse_window("sat.0200-0600")
    assert parse_window("Mon-Fri 22:00-02:00") == parse_window("mon-fri.2200-0200")
    assert parse_window("daily 01:00-03:00").days == frozenset(range(7))
    assert parse_window("fri-mon.0000-0000").days == frozenset({4, 5, 6, 0})
    assert parse_window("00:00-00:00").duration_minutes == 1440


@pytest.mark.parametrize("bad", ["someday 01:00-02:00", "sat 25:00-26:00", "sat", "sat 1-2"])
def test_bad_windows_are_refused(bad):
    with pytest.raises(WindowError):
        parse_window(bad)


def test_wait_until_saturday_night():
    window = parse_window("sat.0200-0600")
    assert window.seconds_until_open(SAT + timedelta(hours=1)) == 3600
    assert window.is_open(SAT + timedelta(hours=3))
    assert window.seconds_until_open(SAT + timedelta(hours=6)) == 7 * 86400 - 4 * 3600


def test_window_past_midnight_is_open_next_morning():
    window = parse_window("fri 22:00-02:00")
    assert window.is_open(SAT + timedelta(hours=1))  # Friday's window, Saturday 01:00
    assert not window.is_open(SAT + timedelta(hours=3))


@given(windows, instants)
def test_opening_is_the_first_window_ending_after_now(window, now):
    start, end = window.opening(now)
    assert end > now
    assert start.weekday() in window.days
    assert (end - start) == timedelta(minutes=window.duration_minutes)
    assert start.hour * 60 + start.minute == window.start_minute


@given(windows, instants)
def test_nothing_opens_before_the_reported_start(window, now):
    wait = window.seconds_until_open(now)
    assert wait >= 0
    if wait:
        # Just before the reported opening the window is still closed; at it, open.
        assert not window.is_open(now + timedelta(seconds=wait) - timedelta(microseconds=1))
        assert window.is_open(now + timedelta(seconds=wait))
