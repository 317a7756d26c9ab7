"""Discovery documents (/api, /apis, per group-version resource lists, aggregated
discovery v2 when asked for), and /version. OpenAPI lives in openapi.py."""

from __future__ import annotations

from typing import Any

import yaml

from lab.api import registry
from lab.api.registry import Resource
from lab.store import Obj, ObjectStore, ResourceKey

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_CONFIGMAPS = ResourceKey("", "configmaps")
_SUBRESOURCE_VERBS = {"log": ["get"], "finalize": ["update"]}
_DEFAULT_SUBRESOURCE_VERBS = ["get", "patch", "update"]


def cluster_version(store: ObjectStore, fallback: str) -> str:
    """The control-plane version: kube-system/kubeadm-config's ClusterConfiguration
    kubernetesVersion (kept current by the simulation), else `fallback`."""
    config = store.find(_CONFIGMAPS, "kube-system", "kubeadm-config")
    if config is not None:
        try:
            parsed = yaml.safe_load((config.get("data") or {}).get("ClusterConfiguration", ""))
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("kubernetesVersion"):
            return str(parsed["kubernetesVersion"])
    return fallback


def version_info(git_version: str) -> Obj:
    major, _, rest = git_version.lstrip("v").partition(".")
    minor = rest.partition(".")[0]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "lab",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _subresource_entries(res: Resource) -> list[tuple[str, str, str, str, list[str]]]:
    """(name, group, version, kind, verbs) per subresource."""
    out = []
    for sub in sorted(res.subresources):
        verbs = _SUBRESOURCE_VERBS.get(sub, _DEFAULT_SUBRESOURCE_VERBS)
        if sub == "scale":
            out.append((sub, "autoscaling", "v1", "Scale", verbs))
        else:
            out.append((sub, res.group, res.version, res.kind, verbs))
    return out


def resource_list(resources: list[Resource], group: str, version: str) -> Obj | None:
    """APIResourceList for one group/version; None when nothing is served there."""
    entries: list[Obj] = []
    for r in resources:
        if r.group != group or r.version != version:
            continue
        entry: Obj = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
        for sub, g, v, kind, verbs in _subresource_entries(r):
            sub_entry: Obj = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }
            if g != r.group or v != r.version:
                sub_entry.update(group=g, version=v)
            entries.append(sub_entry)
    if not entries:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


def api_versions() -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group(name: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(resources: list[Resource]) -> Obj:
    groups = registry.group_versions(resources)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in groups.items() if g],
    }


def api_group(resources: list[Resource], name: str) -> Obj | None:
    versions = registry.group_versions(resources).get(name)
    if not versions:
        return None
    return dict(_group(name, versions), kind="APIGroup", apiVersion="v1")


def _aggregated_resource(r: Resource) -> Obj:
    entry: Obj = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    subs = [
        {
            "subresource": sub,
            "responseKind": {"group": g, "version": v, "kind": kind},
            "verbs": verbs,
        }
        for sub, g, v, kind, verbs in _subresource_entries(r)
    ]
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(resources: list[Resource], *, core: bool) -> Obj:
    """APIGroupDiscoveryList (apidiscovery.k8s.io/v2) for /api (core) or /apis."""
    items: list[Any] = []
    for group, versions in registry.group_versions(resources).items():
        if (group == "") != core:
            continue
        items.append(
            {
                "metadata": {"name": group},
                "versions": [
                    {
                        "version": v,
                        "freshness": "Current",
                        "resources": [
                            _aggregated_resource(r)
                            for r in resources
                            if r.group == group and r.version == v
                        ],
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def wants_aggregated(accept: str) -> bool:
    """Whether the Accept header asks for apidiscovery.k8s.io/v2 (kubectl does)."""
    for media in accept.split(","):
        params = {p.strip() for p in media.split(";")[1:]}
        if {"g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"} <= params:
            return True
    return False
