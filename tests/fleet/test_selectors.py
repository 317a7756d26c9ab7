"""Label selectors behave as `kubectl -l` does."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.selectors import SelectorError, parse_selector

LABELS = {"env": "prod", "region": "eu", "provider": "aws"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("env=prod", True),
        ("env==prod", True),
        ("env=staging", False),
        ("env!=staging", True),
        ("env!=prod", False),
        ("team!=x", True),  # != matches clusters without the label, as in Kubernetes
        ("region in (eu,us)", True),
        ("region in (us, ap)", False),
        ("region notin (us,ap)", True),
        ("team notin (a)", True),
        ("provider", True),
        ("!provider", False),
        ("!team", True),
        ("env=prod,region=eu,!team", True),
        ("env=prod,region=us", False),
    ],
)
def test_matching(selector: str, matches: bool) -> None:
    assert parse_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize(
    "bad",
    ["env in (", "region in ()", "a,,b", "=prod", "env=pr od", "env in (a,,b)", "env ~ x"],
)
def test_bad_selectors_raise_a_readable_error(bad: str) -> None:
    with pytest.raises(SelectorError) as exc:
        parse_selector(bad)
    assert bad.strip().split(",")[0][:2] in str(exc.value) or "selector" in str(exc.value)


keys = st.sampled_from(["env", "region", "team", "flotilla.io/tier"])
values = st.sampled_from(["prod", "eu", "a", "b-1"])
label_sets = st.dictionaries(keys, values, max_size=4)


@given(label_sets, keys, values)
def test_equality_and_inequality_are_complements(labels, key, value) -> None:
    eq = parse_selector(f"{key}={value}").matches(labels)
    ne = parse_selector(f"{key}!={value}").matches(labels)
    assert eq != ne


@given(label_sets, keys)
def test_exists_and_not_exists_are_complements(labels, key) -> None:
    assert parse_selector(key).matches(labels) != parse_selector(f"!{key}").matches(labels)


@given(label_sets, st.lists(st.tuples(keys, values), max_size=3))
def test_round_trip_through_str(labels, pairs) -> None:
    text = ",".join(f"{k}={v}" for k, v in pairs)
    parsed = parse_selector(text)
    assert parse_selector(str(parsed)).matches(labels) == parsed.matches(labels)
