from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fleet.addon_target import AddonTarget
from fleet.k8s_target import K8sTarget
from fleet.models import ClusterRecord, CredentialRef, OperationLock
from fleet.rollout_models import RolloutOptions, RolloutSpec
from fleet.wave_specs import PlanError, allowed_failures, parse_waves, split_waves
from fleet.waves import build_plan
from fleet.windows import WINDOW_LABEL

ENVS = ["dev", "staging", "prod"]
REGIONS = ["eu", "us", "ap"]


def record(name: str, env: str = "prod", region: str = "eu", version: str = "v1.30.6"):
    return ClusterRecord(
        name=name,
        labels={"env": env, "region": region},
        credential=CredentialRef(context=f"lab-{name}"),
        version=version,
    )


def fleet(n: int) -> list[ClusterRecord]:
    return [
        record(f"{REGIONS[i % 3]}-{ENVS[i % 3]}-{i}", ENVS[i % 3], REGIONS[i % 3]) for i in range(n)
    ]


def k8s(waves, selector="", **options) -> RolloutSpec:
    return RolloutSpec(
        id="t",
        selector=selector,
        waves=waves,
        operation=K8sTarget(version="v1.31.2"),
        options=RolloutOptions(**options),
    )


def names(plan):
    return [[c.name for c in w.clusters] for w in plan.waves]


def test_split_respects_parentheses():
    assert split_waves("canary:1, region in (eu,us),rest") == [
        "canary:1",
        "region in (eu,us)",
        "rest",
    ]


def test_parse_kinds_and_names():
    canary, share, sel, rest = parse_waves(["canary:1,25%,env=staging&region=eu,rest"])
    assert (canary.name, canary.count) == ("canary", 1)
    assert (share.name, share.percent) == ("wave-2", 25.0)
    assert sel.selector == "env=staging,region=eu"
    assert rest.rest


@pytest.mark.parametrize("bad", ["0", "150%", "canary:env in (", "x:"])
def test_bad_waves(bad):
    with pytest.raises(PlanError):
        parse_waves([bad])


def test_budget():
    assert allowed_failures("", 10) is None
    assert allowed_failures("2", 10) == 2
    assert allowed_failures("10%", 10) == 1
    assert allowed_failures("10%", 9) == 0
    with pytest.raises(PlanError):
        allowed_failures("ten", 10)


def test_lab_fleet_plan_canary_first_prod_last():
    records = [
        record("eu-dev-1", "dev"),
        record("eu-staging-1", "staging"),
        record("us-staging-1", "staging", "us"),
        record("eu-prod-1"),
        record("us-prod-1", region="us"),
        record("ap-prod-1", region="ap"),
    ]
    plan = build_plan(k8s(["canary:1,env=staging,rest"]), records)
    assert names(plan) == [
        ["eu-dev-1"],
        ["eu-staging-1", "us-staging-1"],
        ["ap-prod-1", "eu-prod-1", "us-prod-1"],
    ]
    assert [w.name for w in plan.waves] == ["canary", "env=staging", "rest"]


def test_refusals_name_the_problem():
    with pytest.raises(PlanError, match="no clusters matching"):
        build_plan(k8s(["rest"], selector="env=nope"), fleet(3))
    skip = fleet(2) + [record("old", version="v1.29.1")]
    with pytest.raises(PlanError, match="old: .*skips a minor"):
        build_plan(k8s(["rest"]), skip)
    down = fleet(2) + [record("new", version="v1.32.0")]
    with pytest.raises(PlanError, match="new: .*downgrade"):
        build_plan(k8s(["rest"]), down)
    locked = fleet(2)
    locked[0].lock = OperationLock(
        holder="rollout:k8s:x", operation="upgrade", acquired_at=datetime.now(UTC)
    )
    with pytest.raises(PlanError, match="locked by rollout:k8s:x"):
        build_plan(k8s(["rest"]), locked)
    odd = record("odd")
    odd.labels[WINDOW_LABEL] = "whenever"
    window = fleet(2) + [odd]
    with pytest.raises(PlanError, match="odd: .*window"):
        build_plan(k8s(["rest"]), window)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"options": {"failure_budget": "lots"}}, "failure budget 'lots'"),
        ({"options": {"window": "whenever"}}, "window"),
        ({"options": {"max_concurrent": 0}}, "greater than or equal to 1"),
        ({"options": {"soak": "99999999999h"}}, "less than or equal"),
        ({"options": {"cluster_timeout": "0"}}, "greater than 0"),
        ({"options": {"soak": "soon"}}, "bad duration 'soon'"),
        ({"options": {"auto_rollback": True}}, "cannot be undone"),
        ({"id": "bad id/with slash"}, "should match pattern"),
        ({"waves": "a:1,a:2"}, "two waves are named 'a'"),
        ({"waves": ""}, "no waves given"),
        ({"selector": "env in (a"}, "selector"),
        ({"operation": {"kind": "k8s", "version": "one"}}, "version"),
        ({"operation": {"kind": "nope"}}, "unknown operation kind 'nope'"),
    ],
)
def test_specs_refuse_bad_input(fields, message):
    """Every way a spec can be wrong is refused when it is made, wherever it comes from."""
    data = {"id": "t", "operation": K8sTarget(version="v1.31.2"), **fields}
    with pytest.raises(ValidationError, match=message):
        RolloutSpec.model_validate(data)


def test_addon_image_must_be_a_reference():
    bad = AddonTarget(name="coredns", image="NOT AN IMAGE")
    with pytest.raises(ValidationError, match="not a valid image reference"):
        RolloutSpec(id="a", operation=bad)
    RolloutSpec(id="a", operation=AddonTarget(name="c", image="registry.k8s.io/coredns:v1.11.3"))


def test_addon_plan_ignores_versions():
    spec = RolloutSpec(
        id="a", waves=["rest"], operation=AddonTarget(name="coredns", image="coredns:1.11")
    )
    assert (
        len(build_plan(spec, fleet(2) + [record("old", version="v1.20.0")]).waves[0].clusters) == 3
    )


def test_plan_without_any_wave_is_refused():
    with pytest.raises(PlanError, match="no wave selects any of the 3 clusters"):
        build_plan(k8s(["env=nope,region=nowhere"]), fleet(3))


def test_empty_waves_dropped_and_leftovers_noted():
    plan = build_plan(k8s(["env=nope,1"]), fleet(3))
    assert len(plan.waves) == 1
    assert any("dropped" in n for n in plan.notes)
    assert any("in no wave" in n for n in plan.notes)


wave_lists = st.lists(
    st.one_of(
        st.integers(1, 20).map(str),
        st.integers(1, 100).map(lambda p: f"{p}%"),
        st.sampled_from(["env=dev", "env=prod", "region in (eu,us)", "env!=prod"]),
    ),
    max_size=5,
    unique=True,  # two waves of one name are refused (test_specs_refuse_bad_input)
)


@given(st.integers(1, 60), wave_lists, st.booleans())
def test_plan_partitions_selection_in_stable_order(n, waves, with_rest):
    records = fleet(n)
    spec = k8s(waves + (["rest"] if with_rest else []) or ["rest"])
    try:
        plan = build_plan(spec, records)
    except PlanError as exc:  # only when every wave selects nothing
        assert "no wave selects" in str(exc) and waves and not with_rest
        assert not any(w.count or w.percent for w in parse_waves(waves))
        return
    planned = plan.cluster_names()
    assert len(planned) == len(set(planned))  # no cluster twice
    if with_rest or not waves:
        assert sorted(planned) == sorted(r.name for r in records)  # none left out
    assert all(w.clusters for w in plan.waves)  # no empty wave
    assert names(build_plan(spec, list(reversed(records)))) == names(plan)  # input order free
