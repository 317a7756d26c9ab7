"""The lab records update and patch writers in managedFields as the API server does: the
fields a write changed move to its manager's `Update` entry, taken from the applier."""

from __future__ import annotations

import copy

from lab.api.applying import apply, from_fields_v1, record_update


def test_an_edit_takes_the_changed_field_from_the_applier() -> None:
    applied = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": "a"},
        "spec": {"hard": {"pods": "20", "cpu": "4"}},
    }
    live = apply(None, applied, manager="flotilla", force=False, api_version="v1")
    edited = copy.deepcopy(live)
    edited["spec"]["hard"]["pods"] = "50"
    record_update(live, edited, manager="kubectl-edit", api_version="v1")
    entries = {e["manager"]: e for e in edited["metadata"]["managedFields"]}
    assert entries["kubectl-edit"]["operation"] == "Update"
    assert from_fields_v1(entries["kubectl-edit"]["fieldsV1"]) == {("f:spec", "f:hard", "f:pods")}
    assert from_fields_v1(entries["flotilla"]["fieldsV1"]) == {("f:spec", "f:hard", "f:cpu")}
    unchanged = copy.deepcopy(edited)
    record_update(edited, unchanged, manager="other", api_version="v1")
    assert "other" not in {e["manager"] for e in unchanged["metadata"]["managedFields"]}
