"""The access policy (fleet/access.py): roles within teams' clusters, admins, four-eyes,
and one clear line for every mistake in the file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet.access import AccessError, Principal, Role, load_policy, parse_policy
from fleet.audit import AuditRecord, export
from tests.starters.conftest import Run, assert_one_line_error

POLICY = {
    "version": 1,
    "admins": ["user:root", "group:platform"],
    "teams": {
        "a": {
            "clusters": "team=a",
            "viewer": ["group:everyone"],
            "operator": ["user:alice"],
            "approver": ["user:carol", "group:a-approvers"],
        },
        "b": {"clusters": "team in (b),env!=lab", "operator": ["user:bob"]},
    },
}
A = {"team": "a", "env": "prod"}
B = {"team": "b", "env": "prod"}


def who(name: str, *groups: str) -> Principal:
    return Principal(name=name, via="token", groups=groups)


def test_roles_hold_within_the_teams_clusters() -> None:
    policy = parse_policy(POLICY)
    alice, bob, carol = who("alice"), who("bob"), who("dan", "a-approvers")
    assert policy.roles_on(alice, A) == {Role.VIEWER, Role.OPERATOR}
    assert policy.roles_on(alice, B) == set()
    assert policy.roles_on(bob, B) == {Role.VIEWER, Role.OPERATOR}
    assert policy.roles_on(bob, {"team": "b", "env": "lab"}) == set()
    assert policy.roles_on(carol, A) == {Role.VIEWER, Role.APPROVER}
    assert policy.roles_on(who("eve", "everyone"), A) == {Role.VIEWER}
    assert policy.roles_on(who("root"), B) == set(Role)
    assert policy.roles_on(who("x", "platform"), {}) == set(Role)
    assert policy.refused(alice, Role.OPERATOR, [("a0", A), ("b0", B), ("b1", B)]) == ["b0", "b1"]
    assert policy.can_somewhere(alice, Role.OPERATOR)
    assert not policy.can_somewhere(who("eve", "everyone"), Role.OPERATOR)
    assert policy.teams_of(alice) == {"a": {Role.VIEWER, Role.OPERATOR}}


def test_four_eyes_defaults_to_prod_and_can_be_turned_off() -> None:
    policy = parse_policy(POLICY)
    assert policy.needs_four_eyes([{"env": "dev"}, A])
    assert not policy.needs_four_eyes([{"env": "dev"}])
    assert not parse_policy({**POLICY, "four_eyes": ""}).needs_four_eyes([A])


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({**POLICY, "version": 2}, "version: unsupported version 2"),
        ({"teams": {}}, "version: Field required"),
        ({**POLICY, "admins": ["root"]}, "admins: member 'root' must be user:<name>"),
        ({**POLICY, "teams": {"a": {"clusters": "team in (a"}}}, "teams.a.clusters: selector"),
        ({**POLICY, "teams": {"a": {"clusters": ""}}}, "a team must own clusters"),
        ({**POLICY, "teams": {"a": {"clusters": "t=a", "owner": []}}}, "teams.a.owner: Extra"),
        ({**POLICY, "four_eyes": "env in prod"}, "four_eyes: selector"),
        (["not", "a", "mapping"], "expected a mapping"),
    ],
)
def test_a_bad_policy_is_one_clear_line(document: object, expected: str) -> None:
    with pytest.raises(AccessError) as caught:
        parse_policy(document, source="access.yaml")
    message = str(caught.value)
    assert message.startswith("access.yaml: ") and expected in message, message
    assert "\n" not in message


def test_policy_files(tmp_path: Path) -> None:
    path = tmp_path / "access.yaml"
    path.write_text("version: 1\nteams:\n  a:\n    clusters: team=a\n    viewer: [user:v]\n")
    assert load_policy(path).teams["a"].viewer == ["user:v"]
    path.write_text("version: 1\nteams: [\n")
    with pytest.raises(AccessError, match="not valid YAML at line"):
        load_policy(path)
    with pytest.raises(AccessError, match="cannot read access policy"):
        load_policy(tmp_path / "missing.yaml")


def test_the_api_refuses_to_start_with_a_bad_policy(tmp_path: Path, flotilla: Run) -> None:
    path = tmp_path / "access.yaml"
    path.write_text("version: 1\nteams:\n  a:\n    clusters: team in (a\n    operator: [alice]\n")
    result = flotilla("api", "serve", "--port", "0", env={"FLOTILLA_ACCESS_FILE": str(path)})
    line = assert_one_line_error(result, 2)
    assert "teams.a.clusters: selector 'team in (a' does not parse" in line, line
    assert "teams.a.operator: member 'alice' must be user:<name>" in line, line


def test_an_export_with_a_gap_fails_verification(tmp_path: Path, flotilla: Run) -> None:
    now = datetime.now(UTC)
    records = [
        AuditRecord(seq=n, at=now, principal="p", action="a", result="ok") for n in (1, 2, 5)
    ]
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(export(records, "jsonl")))
    line = assert_one_line_error(flotilla("audit", "verify", str(path)), 1)
    assert "3 records, seq 1..5: missing 3-4" in line, line


def test_the_example_policy_is_valid() -> None:
    policy = load_policy(Path(__file__).parents[2] / "examples" / "access.yaml")
    assert policy.roles_on(who("alice"), {"region": "eu"}) == {Role.VIEWER, Role.OPERATOR}
    assert policy.roles_on(who("alice"), {"region": "us"}) == set()
