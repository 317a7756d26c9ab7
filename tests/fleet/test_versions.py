from hypothesis import given
from hypothesis import strategies as st

from fleet.versions import (
    Version,
    VersionError,
    check_upgrade,
    node_skew_problem,
    parse_version,
    upgrade_problem,
)

versions = st.builds(Version, st.just(1), st.integers(20, 40), st.integers(0, 20))


def test_parse_accepts_common_forms():
    assert parse_version("v1.30.6") == Version(1, 30, 6)
    assert parse_version("1.31.2") == Version(1, 31, 2)
    assert parse_version("v1.29.3+k3s1") == Version(1, 29, 3)


def test_parse_rejects_garbage():
    for bad in ["", "v1.30", "latest", "v1.x.2"]:
        try:
            parse_version(bad)
        except VersionError as exc:
            assert "v1.31.2" in str(exc)
        else:
            raise AssertionError(bad)


def test_named_rules():
    assert upgrade_problem("v1.30.6", "v1.31.2") == ""
    assert upgrade_problem("v1.30.6", "v1.30.9") == ""
    assert "skips a minor" in upgrade_problem("v1.30.6", "v1.32.0")
    assert "downgrade" in upgrade_problem("v1.31.0", "v1.30.6")
    assert "downgrade" in upgrade_problem("v1.30.6", "v1.30.5")
    assert upgrade_problem("", "v1.31.0") == ""
    assert node_skew_problem("v1.30.6", "v1.31.0")
    assert node_skew_problem("v1.31.0", "v1.30.6") == ""


@given(versions, versions)
def test_allowed_exactly_when_same_or_up_at_most_one_minor(current, target):
    allowed = upgrade_problem(str(current), str(target)) == ""
    expected = current <= target and target.minor - current.minor <= 1
    assert allowed == expected


@given(versions, versions)
def test_check_upgrade_raises_iff_problem(current, target):
    problem = upgrade_problem(str(current), str(target))
    try:
        check_upgrade(str(current), str(target))
    except VersionError as exc:
        assert str(exc) == problem
    else:
        assert problem == ""


@given(versions)
def test_str_round_trips(version):
    assert parse_version(str(version)) == version
