"""The event recorder: aggregation of repeats, the per-cluster cap, restore."""

from __future__ import annotations

from lab.controllers.events import EVENTS, NORMAL, Recorder
from lab.store import ObjectStore

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "default", "uid": "u1", "resourceVersion": "7"},
}


def test_repeats_aggregate_into_one_event_with_a_count() -> None:
    store = ObjectStore("c")
    recorder = Recorder(store)
    for _ in range(3):
        recorder.record(POD, NORMAL, "Pulling", 'Pulling image "a"', component="kubelet", host="n")
    (event,) = store.list(EVENTS)
    assert event["count"] == 3 and event["reason"] == "Pulling"
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "web-1",
        "namespace": "default",
        "uid": "u1",
        "resourceVersion": "7",
    }
    assert event["source"] == {"component": "kubelet", "host": "n"}
    assert event["metadata"]["name"].startswith("web-1.")


def test_oldest_events_go_beyond_the_cap_and_a_restore_keeps_counting() -> None:
    store = ObjectStore("c")
    recorder = Recorder(store, limit=5)
    for n in range(8):
        recorder.record(POD, NORMAL, "Started", f"Started container c{n}", component="kubelet")
    messages = sorted(e["message"] for e in store.list(EVENTS))
    assert messages == [f"Started container c{n}" for n in range(3, 8)]
    restored = Recorder(store, limit=5)
    restored.record(POD, NORMAL, "Started", "Started container c7", component="kubelet")
    assert len(store.list(EVENTS)) == 5
    restored.record(POD, NORMAL, "Started", "Started container new", component="kubelet")
    assert len(store.list(EVENTS)) == 5
