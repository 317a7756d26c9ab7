"""API semantics: the pure pieces (selectors, patches, apply, protobuf) directly, and the
wire details kubectl relies on (Tables, discovery, watch bookmarks, faults) over HTTPS."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from lab.api import applying, handlers, patching, protobuf
from lab.api.selectors import field_selector, label_selector
from lab.api.tables import human_duration, json_path
from lab.runtime import Lab
from lab.store import ApiError, ResourceKey
from tests.lab.conftest import ThreadedLab

# ---- pure pieces -----------------------------------------------------------------------


def labelled(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "x", "labels": labels}}


def test_label_selector_operators() -> None:
    obj = labelled(env="prod", tier="web")
    assert label_selector("env=prod")(obj) and label_selector("env==prod")(obj)
    assert not label_selector("env!=prod")(obj)
    assert label_selector("env in (prod,staging),tier")(obj)
    assert not label_selector("env notin (prod)")(obj)
    assert label_selector("!missing")(obj) and not label_selector("!env")(obj)
    with pytest.raises(ApiError):
        label_selector("env in prod)")


def test_field_selector_on_any_path() -> None:
    pod = {"metadata": {"name": "p", "namespace": "a"}, "spec": {"nodeName": "n1"}}
    assert field_selector("metadata.name=p,spec.nodeName=n1")(pod)
    assert field_selector("status.phase!=Running")(pod)  # absent compares as ""
    assert not field_selector("metadata.namespace=b")(pod)


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": 1}
    ops = [
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "replace", "path": "/c", "value": 2},
        {"op": "move", "from": "/c", "path": "/d"},
        {"op": "copy", "from": "/d", "path": "/e"},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "test", "path": "/e", "value": 2},
    ]
    assert patching.json_patch(doc, ops) == {"a": {"b": [2, 3]}, "d": 2, "e": 2}
    assert doc == {"a": {"b": [1, 2]}, "c": 1}
    with pytest.raises(ApiError) as err:
        patching.json_patch(doc, [{"op": "test", "path": "/c", "value": 9}])
    assert err.value.code == 422


def test_merge_patch_null_deletes_and_lists_replace() -> None:
    doc = {"a": 1, "b": {"c": 1, "d": 2}, "l": [1, 2]}
    assert patching.merge_patch(doc, {"a": None, "b": {"c": None}, "l": [3]}) == {
        "b": {"d": 2},
        "l": [3],
    }


def test_strategic_merge_patch_merges_lists_by_key_and_honours_directives() -> None:
    spec = {
        "containers": [
            {
                "name": "a",
                "image": "a:1",
                "env": [{"name": "X", "value": "1"}],
                "ports": [{"containerPort": 80}],
            },
            {"name": "b", "image": "b:1"},
        ],
        "volumes": [{"name": "v1"}, {"name": "v2"}],
        "tolerations": [{"key": "t"}],
    }
    patch = {
        "containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}], "ports": [{"containerPort": 81}]},
            {"name": "b", "$patch": "delete"},
        ],
        "volumes": [{"name": "v1", "$patch": "delete"}],
        "tolerations": [{"key": "u"}],
        "$setElementOrder/volumes": [{"name": "v2"}],
    }
    result = patching.strategic_merge_patch(spec, patch)
    assert result["containers"] == [
        {
            "name": "a",
            "image": "a:1",
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
            "ports": [{"containerPort": 80}, {"containerPort": 81}],
        }
    ]
    assert result["volumes"] == [{"name": "v2"}]
    assert result["tolerations"] == [{"key": "u"}]  # no merge key: replaced
    replaced = patching.strategic_merge_patch(
        {"m": {"a": 1, "b": 2}}, {"m": {"$patch": "replace", "c": 3}}
    )
    assert replaced == {"m": {"c": 3}}
    retained = patching.strategic_merge_patch(
        {"s": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}},
        {"s": {"$retainKeys": ["type"], "type": "Recreate"}},
    )
    assert retained == {"s": {"type": "Recreate"}}
    finalizers = patching.strategic_merge_patch({"finalizers": ["a"]}, {"finalizers": ["b"]})
    assert finalizers == {"finalizers": ["a", "b"]}


def cm(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}


def test_apply_removes_fields_the_manager_dropped_and_detects_conflicts() -> None:
    first = applying.apply(
        None, cm({"a": "1", "b": "2"}), manager="m1", force=False, api_version="v1"
    )
    assert first["data"] == {"a": "1", "b": "2"}
    second = applying.apply(first, cm({"a": "1"}), manager="m1", force=False, api_version="v1")
    assert second["data"] == {"a": "1"}
    shared = applying.apply(second, cm({"a": "1"}), manager="m2", force=False, api_version="v1")
    assert {e["manager"] for e in shared["metadata"]["managedFields"]} == {"m1", "m2"}
    with pytest.raises(ApiError) as err:
        applying.apply(second, cm({"a": "2"}), manager="m2", force=False, api_version="v1")
    assert err.value.code == 409
    assert err.value.details["causes"][0]["field"] == ".data.a"
    forced = applying.apply(second, cm({"a": "2"}), manager="m2", force=True, api_version="v1")
    assert forced["data"] == {"a": "2"}
    owners = {e["manager"]: e["fieldsV1"] for e in forced["metadata"]["managedFields"]}
    assert owners == {"m2": {"f:data": {"f:a": {}}}}


def test_apply_tracks_keyed_list_items() -> None:
    paths = applying.field_paths({"spec": {"containers": [{"name": "web", "image": "i"}]}})
    assert paths == {
        ("f:spec", "f:containers", 'k:{"name":"web"}', "f:name"),
        ("f:spec", "f:containers", 'k:{"name":"web"}', "f:image"),
    }


def _field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2, len(value)]) + value


def test_protobuf_self_subject_access_review_and_configmap() -> None:
    type_meta = _field(1, b"authorization.k8s.io/v1") + _field(2, b"SelfSubjectAccessReview")
    attributes = _field(2, b"list") + _field(5, b"pods") + _field(1, b"default")
    raw = _field(2, _field(1, attributes))
    review = protobuf.decode(protobuf.MAGIC + _field(1, type_meta) + _field(2, raw))
    assert review["spec"]["resourceAttributes"] == {
        "namespace": "default",
        "verb": "list",
        "resource": "pods",
    }
    type_meta = _field(1, b"v1") + _field(2, b"ConfigMap")
    meta = _field(1, b"cfg") + _field(11, _field(1, b"app") + _field(2, b"x"))
    raw = _field(1, meta) + _field(2, _field(1, b"k") + _field(2, b"v"))
    obj = protobuf.decode(protobuf.MAGIC + _field(1, type_meta) + _field(2, raw))
    assert obj["metadata"] == {"name": "cfg", "labels": {"app": "x"}}
    assert obj["data"] == {"k": "v"}
    type_meta = _field(1, b"batch/v1") + _field(2, b"Job")
    with pytest.raises(ApiError) as err:
        protobuf.decode(protobuf.MAGIC + _field(1, type_meta))
    assert err.value.code == 415


def test_printer_column_json_paths() -> None:
    obj = {"metadata": {"labels": {"a.b/c": "x"}}, "status": {"ok": True, "items": [{"n": 2}]}}
    assert json_path(obj, ".metadata.labels['a\\.b/c']") == "x"
    assert json_path(obj, ".status.ok") == "true"
    assert json_path(obj, ".status.items[0].n") == "2"
    assert json_path(obj, ".status.missing") == ""


def test_paths_and_durations() -> None:
    assert handlers.parse_path("/api/v1/namespaces/a/pods/p/status") == handlers.Target(
        "", "v1", "pods", "a", "p", "status"
    )
    assert handlers.parse_path("/api/v1/namespaces/a") == handlers.Target(
        "", "v1", "namespaces", None, "a", ""
    )
    assert handlers.parse_path("/apis/apps/v1/deployments") == handlers.Target(
        "apps", "v1", "deployments"
    )
    assert [human_duration(s) for s in (5, 150, 3700, 90000, 700000)] == [
        "5s",
        "2m30s",
        "61m",
        "25h",
        "8d",
    ]


# ---- over HTTPS ------------------------------------------------------------------------


class Http:
    def __init__(self, session: aiohttp.ClientSession, server: str, token: str):
        self.session, self.server, self.token = session, server, token

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        all_headers = {
            "Authorization": f"Bearer {self.token if token is None else token}",
            "Content-Type": "application/json",
            **(headers or {}),
        }
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method, self.server + path, data=data, headers=all_headers
        ) as resp:
            text = await resp.text()
            is_json = resp.content_type == "application/json" and "\n" not in text.strip()
            return resp.status, json.loads(text) if is_json else text, resp


@pytest.fixture
async def http(lab: ThreadedLab) -> AsyncIterator[Http]:
    config = yaml.safe_load(lab.kubeconfig.read_text())
    entry = next(c for c in config["clusters"] if c["name"] == "lab-eu-staging-1")["cluster"]
    user = next(u for u in config["users"] if u["name"] == "lab-eu-staging-1")["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(entry["certificate-authority-data"]).decode()
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield Http(session, entry["server"], user["token"])


async def test_unauthenticated_requests_get_a_401_status(http: Http) -> None:
    status, body, _ = await http.request("GET", "/api/v1/namespaces", token="")
    assert status == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    status, body, _ = await http.request("GET", "/healthz", token="")
    assert (status, body) == (200, "ok")


async def test_table_output_for_nodes(http: Http) -> None:
    status, body, _ = await http.request(
        "GET",
        "/api/v1/nodes",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
    )
    assert status == 200 and body["kind"] == "Table"
    assert [c["name"] for c in body["columnDefinitions"] if c["priority"] == 0] == [
        "Name",
        "Status",
        "Roles",
        "Age",
        "Version",
    ]
    assert body["rows"][0]["cells"][:3] == ["eu-staging-1-cp-0", "Ready", "control-plane"]
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


async def test_aggregated_and_legacy_discovery(http: Http) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    status, body, resp = await http.request("GET", "/apis", headers={"Accept": accept})
    assert status == 200 and resp.headers["Content-Type"].startswith(
        "application/json;g=apidiscovery.k8s.io"
    )
    apps = next(g for g in body["items"] if g["metadata"]["name"] == "apps")
    deployments = next(
        r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments"
    )
    assert {s["subresource"] for s in deployments["subresources"]} == {"scale", "status"}
    status, body, _ = await http.request("GET", "/apis/apps/v1")
    assert "deployments/scale" in {r["name"] for r in body["resources"]}
    status, body, _ = await http.request("GET", "/apis/nothing.example/v1")
    assert status == 404 and body["reason"] == "NotFound"


async def test_watch_with_initial_events_ends_with_a_bookmark(http: Http) -> None:
    status, body, _ = await http.request(
        "GET",
        "/api/v1/namespaces?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
        "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
    )
    events = [json.loads(line) for line in body.splitlines()]
    assert {e["type"] for e in events[:-1]} == {"ADDED"}
    assert events[-1]["type"] == "BOOKMARK"
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_namespace_goes_terminating_then_away(http: Http) -> None:
    await http.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "doomed"}})
    await http.request(
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        body={"metadata": {"name": "held", "finalizers": ["x/y"]}},
    )
    status, body, _ = await http.request("DELETE", "/api/v1/namespaces/doomed")
    assert status == 200 and body["status"]["phase"] == "Terminating"
    status, body, _ = await http.request(
        "POST", "/api/v1/namespaces/doomed/configmaps", body={"metadata": {"name": "late"}}
    )
    assert status == 403
    for _ in range(100):  # the namespace controller deletes the content shortly after
        status, body, _ = await http.request("GET", "/api/v1/namespaces/doomed/configmaps/held")
        if body["metadata"].get("deletionTimestamp"):
            break  # and the configmap waits for its finalizer
        await asyncio.sleep(0.1)
    assert body["metadata"]["deletionTimestamp"]
    await http.request(
        "PATCH",
        "/api/v1/namespaces/doomed/configmaps/held",
        body={"metadata": {"finalizers": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    status, stream, _ = await http.request(
        "GET",
        "/api/v1/namespaces?watch=1&fieldSelector=metadata.name%3Ddoomed"
        f"&resourceVersion={body['metadata']['resourceVersion']}&timeoutSeconds=5",
    )
    assert "DELETED" in str(stream)
    status, _, _ = await http.request("GET", "/api/v1/namespaces/doomed")
    assert status == 404
    status, body, _ = await http.request("DELETE", "/api/v1/namespaces/default")
    assert status == 403


async def test_dark_refuse_closes_the_port_until_cleared(lab: ThreadedLab, http: Http) -> None:
    port = lab.lab.clusters["eu-staging-1"].port
    lab.call(lab.lab.set_fault("eu-staging-1", "dark", {"mode": "refuse"}))
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    lab.call(lab.lab.clear_fault("eu-staging-1", "dark"))
    status, _, _ = await http.request("GET", "/version")
    assert status == 200


async def test_flaky_and_unknown_faults(lab: ThreadedLab, http: Http) -> None:
    lab.call(lab.lab.set_fault("eu-staging-1", "flaky", {"rate": 1.0, "codes": [429]}))
    status, body, resp = await http.request("GET", "/api/v1/namespaces")
    assert status == 429 and resp.headers["Retry-After"] == "1" and body["kind"] == "Status"
    lab.call(lab.lab.clear_fault("eu-staging-1"))
    status, _, _ = await http.request("GET", "/api/v1/namespaces")
    assert status == 200
    with pytest.raises(ValueError):
        lab.call(lab.lab.set_fault("eu-staging-1", "meteor", {}))


async def test_dark_hang_accepts_but_never_answers_until_cleared(
    lab: ThreadedLab, http: Http
) -> None:
    lab.call(lab.lab.set_fault("eu-staging-1", "dark", {"mode": "hang"}))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await http.request("GET", "/version")
    lab.call(lab.lab.set_fault("eu-staging-1", "slow", {"latency_ms": 10}))
    lab.call(lab.lab.clear_fault("eu-staging-1", "dark"))
    status, _, _ = await http.request("GET", "/version")  # slow, but answered
    assert status == 200
    lab.call(lab.lab.clear_fault("eu-staging-1"))
    assert lab.lab.clusters["eu-staging-1"].faults == {}


async def test_state_file_restores_ports_tokens_and_objects(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    first = Lab(directory=tmp_path, clusters=1, nodes=1, state_file=state_file)
    await first.start()
    cluster = first.clusters["eu-dev-1"]
    port, token = cluster.port, cluster.token
    cluster.store.create(
        ResourceKey("", "configmaps"), {"metadata": {"name": "kept", "namespace": "default"}}
    )
    token_user = first.add_user("eu-dev-1", "viewer", ["get"])
    await first.stop()
    assert state_file.stat().st_mode & 0o777 == 0o600

    second = Lab(directory=tmp_path, clusters=1, nodes=1, state_file=state_file)
    await second.start()
    try:
        restored = second.clusters["eu-dev-1"]
        assert (restored.port, restored.token) == (port, token)
        assert restored.authenticate(token_user) is not None
        config = yaml.safe_load(second.kubeconfig.read_text())
        entry = next(c for c in config["clusters"] if c["name"] == restored.context)
        ca = base64.b64decode(entry["cluster"]["certificate-authority-data"])
        context = ssl.create_default_context(cadata=ca.decode())
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(
                f"{restored.server}/api/v1/namespaces/default/configmaps/kept",
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            assert resp.status == 200
    finally:
        await second.stop()


async def test_watch_with_selector_sees_objects_leave_and_enter(http: Http) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    await http.request("POST", path, body={"metadata": {"name": "sel", "labels": {"w": "a"}}})
    url = (
        f"{http.server}{path}?watch=1&labelSelector=w%3Da&sendInitialEvents=true"
        "&allowWatchBookmarks=true&timeoutSeconds=3"
    )
    merge = {"Content-Type": "application/merge-patch+json"}
    headers = {"Authorization": f"Bearer {http.token}"}
    async with http.session.get(url, headers=headers) as resp:
        first = json.loads(await resp.content.readline())
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "sel")
        assert json.loads(await resp.content.readline())["type"] == "BOOKMARK"
        for label in ("b", "a"):
            await http.request(
                "PATCH", f"{path}/sel", body={"metadata": {"labels": {"w": label}}}, headers=merge
            )
        await http.request("DELETE", f"{path}/sel")
        events = [json.loads(line)["type"] async for line in resp.content if line.strip()]
    assert events == ["DELETED", "ADDED", "DELETED"]
