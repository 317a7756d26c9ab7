"""Parsing a repository's bundles (problems name file and line) and placing them
(deterministic, spread over a label, minimal movement when the fleet changes). Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.bundles import BundleError, Placement, parse_repo
from fleet.placement import PlacedCluster, by_cluster, groups, place, place_one
from fleet.sync_diff import applies_nothing, compare, dotted, owners
from starters.cli_sync import RepoNotAllowed, check_push_repo

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "baseline-repo"
SHA = "a" * 40


def example_files() -> dict[str, str]:
    return {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*.yaml")}


def test_the_example_repository_parses() -> None:
    repo = parse_repo(SHA, example_files())
    baseline, web = repo.bundle("baseline"), repo.bundle("web")
    assert len(baseline.manifests) == 20 and baseline.mode == "enforce"
    kinds = {m.kind for m in baseline.manifests}
    assert {"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "Role"} <= kinds
    quota_c = next(m for m in baseline.manifests if m.key() == "v1/ResourceQuota/team-c/compute")
    assert baseline.mode_of(quota_c) == "inform"
    assert web.workload and web.placement == Placement(
        selector="env=prod", clusters=1, spread="region"
    )
    assert repo.settings.prune_threshold == 25


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        (
            "bundles/baseline/x.yaml",
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\nkind: [\n",
            "bundles/baseline/x.yaml:5: invalid YAML",
        ),
        ("bundles/baseline/x.yaml", "apiVersion: v1\nkind: ConfigMap\n", "x.yaml:1: metadata.name"),
        ("bundles/baseline/x.yaml", "- a\n- b\n", "x.yaml:1: a manifest is a mapping"),
        (
            "bundles/web/bundle.yaml",
            "mode: inform\nplacement:\n  selector: 'a in ('\n",
            "bundle.yaml:3:",
        ),
        ("bundles/web/bundle.yaml", "mode: sometimes\n", "bundles/web/bundle.yaml:1: mode"),
        ("bundles/Bad/bundle.yaml", "mode: inform\n", "bundle names are lower-case"),
        ("flotilla.yaml", "waves: [canary:0]\n", "flotilla.yaml:1:"),
    ],
)
def test_a_bad_file_is_refused_naming_file_and_line(path: str, text: str, expected: str) -> None:
    files = example_files() | {path: text}
    with pytest.raises(BundleError) as caught:
        parse_repo(SHA, files)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_an_object_declared_twice_is_refused() -> None:
    files = example_files()
    files["bundles/web/again.yaml"] = files["bundles/baseline/namespaces.yaml"]
    with pytest.raises(BundleError, match="also declared at bundles/baseline/namespaces.yaml:1"):
        parse_repo(SHA, files)


def fleet(n: int) -> list[PlacedCluster]:
    regions = ["eu", "us", "ap"]
    return [
        PlacedCluster(
            name=f"c{i:04d}", labels={"env": "prod" if i % 2 else "dev", "region": regions[i % 3]}
        )
        for i in range(n)
    ]


def test_placement_is_deterministic_spread_and_moves_little() -> None:
    clusters = fleet(60)
    spec = Placement(selector="env=prod", clusters=3, spread="region")
    chosen = place_one("web", spec, clusters)
    assert chosen == place_one("web", spec, list(reversed(clusters)))
    regions = {c.labels["region"] for c in clusters if c.name in chosen}
    assert regions == {"eu", "us", "ap"}
    # Removing a cluster that holds no copy moves nothing; removing one that does moves one.
    other = next(c for c in clusters if c.name not in chosen and c.labels["env"] == "prod")
    assert place_one("web", spec, [c for c in clusters if c is not other]) == chosen
    gone = chosen[0]
    after = place_one("web", spec, [c for c in clusters if c.name != gone])
    assert len(set(after) - set(chosen)) == 1 and len(after) == 3


def test_placement_groups_are_compact() -> None:
    clusters = fleet(10)
    placed = place(
        [("base", Placement()), ("web", Placement(selector="env=prod", clusters=1))], clusters
    )
    common, rest = groups(by_cluster(placed, [c.name for c in clusters]))
    assert common == ["base"] and len(rest) == 1 and rest[0].bundles == ["base", "web"]


def test_drift_compares_only_fields_git_sets_and_names_the_manager() -> None:
    git = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "20"}},
    }
    would = {**git, "status": {"used": {}}}
    live = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "q",
            "annotations": {"other": "x"},
            "managedFields": [
                {
                    "manager": "flotilla",
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:hard": {"f:cpu": {}}}},
                },
                {
                    "manager": "kubectl-edit",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:hard": {"f:pods": {}}}},
                },
            ],
        },
        "spec": {"hard": {"pods": "50"}},
    }
    (path,) = compare(git, would, live)
    assert dotted(path) == ".spec.hard.pods"
    assert owners(live, path, exclude="flotilla") == ["kubectl-edit"]


def test_applies_nothing_needs_git_values_and_no_field_left_behind() -> None:
    git = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}}
    git["spec"] = {"hard": {"pods": "20"}}

    def live(pods: str, owned: dict[str, object]) -> dict[str, object]:
        fields = {"manager": "flotilla", "operation": "Apply", "fieldsV1": owned}
        return {
            **git,
            "metadata": {"name": "q", "managedFields": [fields]},
            "spec": {"hard": {"pods": pods, "cpu": "4"}},
        }

    owns_pods = {"f:spec": {"f:hard": {"f:pods": {}}}}
    assert applies_nothing(git, live("20", owns_pods), manager="flotilla")
    assert not applies_nothing(git, live("50", owns_pods), manager="flotilla")
    # Flotilla still owns `cpu`, which Git no longer sets: the apply would remove it.
    owns_both = {"f:spec": {"f:hard": {"f:pods": {}, "f:cpu": {}}}}
    assert not applies_nothing(git, live("20", owns_both), manager="flotilla")


def test_push_allowlist() -> None:
    allowed = "/srv/git/fleet, https://git.example.com/platform/*"
    check_push_repo("/srv/git/fleet/", allowed)
    check_push_repo("https://git.example.com/platform/baseline.git", allowed)
    for repo, why in [
        ("/srv/git/other", "not in FLOTILLA_GIT_REPOS"),
        ("https://git.example.com/platform/../secrets", "not a plain path"),
        ("https://evil.example.com/platform/x", "not in FLOTILLA_GIT_REPOS"),
    ]:
        with pytest.raises(RepoNotAllowed, match=why):
            check_push_repo(repo, allowed)
    with pytest.raises(RepoNotAllowed, match="set FLOTILLA_GIT_REPOS"):
        check_push_repo("/srv/git/fleet", "")


def test_rollout_options_are_the_repositorys() -> None:
    files = example_files()
    files["bundles/web/bundle.yaml"] += "rollout:\n  waves: [rest]\n"
    lines = files["bundles/web/bundle.yaml"].count("\n") - 1
    with pytest.raises(BundleError, match=rf"bundle.yaml:{lines}: rollout: rollout options are"):
        parse_repo(SHA, files)
