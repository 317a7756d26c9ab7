"""A skeleton OpenAPI v3: just enough for kubectl to know the server validates fields.

kubectl (validate=strict, its default) asks /openapi/v3 whether each kind's PATCH accepts
the `fieldValidation` query parameter; when it does, kubectl leaves validation to the
server instead of downloading schemas. The documents carry paths and
group-version-kind tags but no schemas, so `kubectl explain` has nothing to show and
client-side apply falls back to kubectl's built-in type knowledge.
"""

from __future__ import annotations

import hashlib
import json

from lab.api.registry import Resource
from lab.store import Obj

_GVK = "x-kubernetes-group-version-kind"


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def root(resources: list[Resource]) -> Obj:
    """The /openapi/v3 index: one entry per group/version, addressed with a content hash."""
    paths: Obj = {}
    for gv in sorted({(r.group, r.version) for r in resources}):
        doc = document(resources, *gv)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
        prefix = _prefix(*gv)
        paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={digest.upper()}"}
    return {"paths": paths}


def document(resources: list[Resource], group: str, version: str) -> Obj:
    """The OpenAPI document of one group/version (empty `paths` when nothing is served)."""
    paths: Obj = {}
    for r in resources:
        if r.group != group or r.version != version:
            continue
        scope = "/namespaces/{namespace}" if r.namespaced else ""
        operation = {
            _GVK: {"group": r.group, "version": r.version, "kind": r.kind},
            "parameters": [
                {"name": p, "in": "query", "schema": {"type": "string"}}
                for p in ("dryRun", "fieldManager", "fieldValidation", "force")
            ],
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"/{_prefix(group, version)}{scope}/{r.plural}/{{name}}"] = {"patch": operation}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (flotilla lab)", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": {}},
    }
