"""The official Kubernetes Python client against the lab: CRUD, errors, watches, auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.lab.conftest import ThreadedLab

NS = "python-test"


@pytest.fixture(scope="module")
def api(lab: ThreadedLab) -> Iterator[client.ApiClient]:
    api_client = lab.api_client("eu-dev-1")
    client.CoreV1Api(api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=NS))
    )
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


def configmap(name: str, **labels: str) -> Any:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels or None), data={"k": "v"}
    )


def deployment(name: str) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "{}")
    assert body["kind"] == "Status"
    return body


def test_reads_seeded_objects(core: Any) -> None:
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease", NS} <= names
    node = core.read_node("eu-dev-1-cp-0")
    assert node.status.node_info.kubelet_version == "v1.30.6"


def test_missing_object_is_404_with_status(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("absent", NS)
    assert err.value.status == 404
    assert status_of(err.value)["reason"] == "NotFound"


def test_create_twice_is_409_already_exists(core: Any) -> None:
    core.create_namespaced_config_map(NS, configmap("twice"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, configmap("twice"))
    assert err.value.status == 409 and status_of(err.value)["reason"] == "AlreadyExists"


def test_stale_resource_version_is_409_conflict(core: Any) -> None:
    created = core.create_namespaced_config_map(NS, configmap("occ"))
    fresh = core.read_namespaced_config_map("occ", NS)
    fresh.data = {"k": "new"}
    core.replace_namespaced_config_map("occ", NS, fresh)
    created.data = {"k": "stale"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("occ", NS, created)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("occ", NS).data == {"k": "new"}


def test_invalid_labels_are_422(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, configmap("bad", tier="not valid!"))
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.labels"


def test_unknown_namespace_is_404(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-ns", configmap("x"))
    assert err.value.status == 404


def test_label_and_field_selectors(core: Any) -> None:
    for name, tier in (("sel-a", "web"), ("sel-b", "db"), ("sel-c", "cache")):
        core.create_namespaced_config_map(NS, configmap(name, tier=tier, group="sel"))

    def names(**kw: str) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map(NS, **kw).items]

    assert names(label_selector="tier=web") == ["sel-a"]
    assert names(label_selector="group=sel,tier!=web") == ["sel-b", "sel-c"]
    assert names(label_selector="tier in (db, cache)") == ["sel-b", "sel-c"]
    assert names(label_selector="group=sel,tier notin (db)") == ["sel-a", "sel-c"]
    assert "sel-a" not in names(label_selector="!tier")
    assert names(label_selector="group", field_selector="metadata.name=sel-b") == ["sel-b"]
    with pytest.raises(ApiException) as err:
        names(label_selector="tier in (web")
    assert err.value.status == 400


def test_list_pagination_with_limit_and_continue(core: Any) -> None:
    for n in range(5):
        core.create_namespaced_config_map(NS, configmap(f"page-{n}", paged="yes"))
    seen, token = [], None
    while True:
        page = core.list_namespaced_config_map(NS, label_selector="paged", limit=2, _continue=token)
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"page-{n}" for n in range(5)]


def test_watch_replays_from_resource_version_and_times_out(core: Any) -> None:
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, configmap("watched"))
    core.patch_namespaced_config_map("watched", NS, {"data": {"k": "changed"}})
    core.delete_namespaced_config_map("watched", NS)
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=1
        )
    ]
    assert events == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


def test_watch_from_expired_version_raises_410(lab: ThreadedLab, core: Any) -> None:
    async def churn() -> None:  # push resourceVersion 1 out of the event log
        store = lab.lab.clusters["eu-dev-1"].store
        from lab.store import EVENT_LOG_SIZE, ResourceKey

        key = ResourceKey("", "configmaps")
        obj = store.create(key, {"metadata": {"name": "churn", "namespace": NS}, "data": {}})
        for n in range(EVENT_LOG_SIZE + 1):
            obj = store.update(key, dict(obj, data={"n": str(n)}))

    lab.call(churn())
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, NS, resource_version="1", timeout_seconds=1
        ):
            pass
    assert err.value.status == 410


def test_patch_flavours_and_subresources(apps: Any) -> None:
    apps.create_namespaced_deployment(NS, deployment("py-web"))
    strategic = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "env": [{"name": "X", "value": "1"}]}]}
            }
        }
    }
    patched = apps.patch_namespaced_deployment("py-web", NS, strategic)
    container = patched.spec.template.spec.containers[0]
    assert container.image == "nginx:1.27" and container.env[0].name == "X"
    patched = apps.patch_namespaced_deployment(
        "py-web", NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    )
    assert patched.spec.replicas == 2 and patched.metadata.generation == 3
    scale = apps.patch_namespaced_deployment_scale("py-web", NS, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    assert apps.read_namespaced_deployment_scale("py-web", NS).status.selector == "app=py-web"
    status = apps.patch_namespaced_deployment_status(
        "py-web", NS, {"status": {"observedGeneration": 99}}
    )
    assert status.status.observed_generation == 99


def test_server_side_apply(core: Any) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied", "namespace": NS},
        "data": {"a": "1"},
    }
    created = core.patch_namespaced_config_map(
        "applied", NS, body, field_manager="tests", _content_type="application/apply-patch+yaml"
    )
    assert created.data == {"a": "1"}
    assert created.metadata.managed_fields[0].manager == "tests"
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "applied",
            NS,
            dict(body, data={"a": "2"}),
            field_manager="rival",
            _content_type="application/apply-patch+yaml",
        )
    assert err.value.status == 409


def test_dry_run_does_not_persist(core: Any) -> None:
    result = core.create_namespaced_config_map(NS, configmap("dry"), dry_run="All")
    assert result.metadata.name == "dry"
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("dry", NS)


def test_finalizers_hold_deletion_until_removed(core: Any) -> None:
    cm = configmap("held")
    cm.metadata.finalizers = ["example.com/hold"]
    core.create_namespaced_config_map(NS, cm)
    core.delete_namespaced_config_map("held", NS)
    pending = core.read_namespaced_config_map("held", NS)
    assert pending.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", NS)
    assert err.value.status == 404


def test_delete_collection_by_label(core: Any) -> None:
    for n in range(3):
        core.create_namespaced_config_map(NS, configmap(f"bulk-{n}", bulk="yes"))
    core.delete_collection_namespaced_config_map(NS, label_selector="bulk=yes")
    assert core.list_namespaced_config_map(NS, label_selector="bulk=yes").items == []


def test_wrong_token_is_401(lab: ThreadedLab) -> None:
    api = lab.api_client("eu-dev-1", token="wrong")
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespace()
    assert err.value.status == 401
    api.close()


def test_limited_user_gets_403_outside_its_permissions(lab: ThreadedLab) -> None:
    token = lab.lab.add_user("eu-dev-1", "reader", ["get", "list"], ["configmaps"])
    api = lab.api_client("eu-dev-1", token=token)
    core = client.CoreV1Api(api)
    core.list_namespaced_config_map(NS)
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(NS)
    assert err.value.status == 403
    review: Any = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb="delete", resource="configmaps"
                )
            )
        )
    )
    assert review.status.allowed is False
    api.close()


def test_custom_resources_through_the_dynamic_api(api: Any) -> None:
    ext: Any = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "gadgets.lab.test"},
            "spec": {
                "group": "lab.test",
                "scope": "Cluster",
                "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                "versions": [
                    {
                        "name": "v1alpha1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                    }
                ],
            },
        }
    )
    custom: Any = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(
        "lab.test",
        "v1alpha1",
        "gadgets",
        {
            "apiVersion": "lab.test/v1alpha1",
            "kind": "Gadget",
            "metadata": {"name": "g1"},
            "spec": {"size": 1},
        },
    )
    custom.patch_cluster_custom_object_status(
        "lab.test", "v1alpha1", "gadgets", "g1", {"status": {"ready": True}}
    )
    got = custom.get_cluster_custom_object("lab.test", "v1alpha1", "gadgets", "g1")
    assert got["spec"] == {"size": 1} and got["status"] == {"ready": True}
    listed = custom.list_cluster_custom_object("lab.test", "v1alpha1", "gadgets")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["g1"]
