"""OpenAPI v3: one document per served group/version, with schemas, so `kubectl explain`
works and kubectl knows the server validates fields.

Built-in schemas come from the typed models of the `kubernetes` client package (a
dependency of the project), which mirror the upstream OpenAPI: JSON field names,
descriptions, required fields, int-or-string, maps and lists. They are built once per
process, the first time a document is asked for, and shared by every cluster. Component
names follow upstream where the package is known (`io.k8s.api.apps.v1.DeploymentSpec`,
`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`); nested types take the package of
the first kind that uses them. A CRD's document carries its versions' openAPIV3Schema.

Each PATCH operation lists the `fieldValidation` query parameter: kubectl (validate=strict,
its default) then leaves validation to the server instead of validating client-side.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import json
import re
import types
import typing
from typing import Any

from lab.api.registry import BUILTIN, METRICS, Resource
from lab.store import Obj

_GVK = "x-kubernetes-group-version-kind"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_INTSTR = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)?V\d+(?:(?:alpha|beta)\d+)?(?=[A-Z])")
_PACKAGES = {
    "": "io.k8s.api.core",
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
}
_META_TYPES = {
    "ObjectMeta",
    "ListMeta",
    "LabelSelector",
    "LabelSelectorRequirement",
    "ManagedFieldsEntry",
    "OwnerReference",
    "Condition",
    "Status",
    "StatusDetails",
    "StatusCause",
    "DeleteOptions",
    "Preconditions",
}
_MODEL_NAMES = {"Event": "CoreV1Event"}  # the client's name when the kind's is taken


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _package(group: str, version: str) -> str:
    base = _PACKAGES.get(group) or f"io.k8s.api.{group.split('.')[0]}"
    return f"{base}.{version}"


class _Builder:
    """Turns client model classes into OpenAPI schemas named like upstream's."""

    def __init__(self) -> None:
        import kubernetes.client.models as models  # large: imported on first use only

        self.models = models
        self.names: dict[type, str] = {}
        self.schemas: dict[str, Obj] = {
            _INTSTR: {
                "type": "string",
                "format": "int-or-string",
                "description": "IntOrString is a type that can hold an int32 or a string.",
            },
            _QUANTITY: {"type": "string", "description": "Quantity is a fixed-point number."},
        }

    def model(self, res: Resource) -> type | None:
        version = res.version.capitalize()
        return getattr(self.models, _MODEL_NAMES.get(res.kind, f"{version}{res.kind}"), None)

    def name(self, cls: type, package: str) -> str:
        if cls not in self.names:
            short = _PREFIX.sub("", cls.__name__)
            owner = _META if short in _META_TYPES else package
            self.names[cls] = f"{owner}.{short}"
            self.schemas[self.names[cls]] = {}  # placeholder: recursion stops here
            self.schemas[self.names[cls]] = self._object(cls, package)
        return self.names[cls]

    def _object(self, cls: Any, package: str) -> Obj:
        properties: Obj = {}
        required = []
        for field, info in cls.model_fields.items():
            json_name = cls.attribute_map.get(field, field)
            prop = self._type(info.annotation, package, json_name)
            if info.description:
                prop["description"] = info.description
            properties[json_name] = prop
            if info.is_required():
                required.append(json_name)
        doc = (cls.__doc__ or "").split("Attributes:")[0].strip()
        schema: Obj = {"type": "object", "properties": properties}
        if doc:
            schema["description"] = " ".join(doc.split())
        if required:
            schema["required"] = required
        return schema

    def _type(self, annotation: Any, package: str, json_name: str) -> Obj:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            return self._type(args[0], package, json_name)
        if origin in (typing.Union, types.UnionType):
            kinds = {typing.get_args(a)[0] if typing.get_args(a) else a for a in args}
            if kinds == {int, str}:
                return {"allOf": [{"$ref": f"#/components/schemas/{_INTSTR}"}]}
            return self._type(args[0], package, json_name) if len(args) == 1 else {}
        if origin is list:
            return {"type": "array", "items": self._type(args[0], package, json_name)}
        if origin is dict:
            value = self._type(args[1], package, json_name)
            if json_name in ("limits", "requests", "capacity", "allocatable", "hard", "used"):
                value = {"allOf": [{"$ref": f"#/components/schemas/{_QUANTITY}"}]}
            return {"type": "object", "additionalProperties": value}
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            ref = self.name(annotation, package)
            return {"allOf": [{"$ref": f"#/components/schemas/{ref}"}]}
        return dict(_SCALARS.get(annotation, {"type": "object"}))


_SCALARS: dict[Any, Obj] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number", "format": "double"},
    bool: {"type": "boolean"},
    bytes: {"type": "string", "format": "byte"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
}


@functools.cache
def _builtin() -> tuple[dict[tuple[str, str], list[str]], dict[str, Obj]]:
    """(group, version) -> top-level schema names, and every schema; built once."""
    builder = _Builder()
    roots: dict[tuple[str, str], list[str]] = {}
    for res in BUILTIN:
        cls = builder.model(res) if res.group != METRICS else None
        if cls is None:
            continue
        name = builder.name(cls, _package(res.group, res.version))
        builder.schemas[name][_GVK] = [
            {"group": res.group, "version": res.version, "kind": res.kind}
        ]
        roots.setdefault((res.group, res.version), []).append(name)
    return roots, builder.schemas


def _reachable(names: list[str], schemas: dict[str, Obj]) -> dict[str, Obj]:
    out: dict[str, Obj] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in out or name not in schemas:
            continue
        out[name] = schemas[name]
        pending.extend(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schemas[name])))
    return out


def _crd_schema(res: Resource, schema: Obj) -> Obj:
    schema = dict(schema)
    properties = dict(schema.get("properties") or {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties["metadata"] = {"allOf": [{"$ref": f"#/components/schemas/{_META}.ObjectMeta"}]}
    schema.update(type="object", properties=properties)
    schema[_GVK] = [{"group": res.group, "version": res.version, "kind": res.kind}]
    return schema


def _crd_name(res: Resource) -> str:
    reversed_group = ".".join(reversed(res.group.split(".")))
    return f"{reversed_group}.{res.version}.{res.kind}"


def document(resources: list[Resource], group: str, version: str) -> Obj:
    """The OpenAPI document of one group/version (empty `paths` when nothing is served)."""
    builtin_roots, schemas = _builtin()
    paths: Obj = {}
    roots = list(builtin_roots.get((group, version), []))
    components: Obj = {}
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
        if r.custom and r.schema is not None:
            components[_crd_name(r)] = _crd_schema(r, r.schema)
            roots.append(f"{_META}.ObjectMeta")
    components.update(_reachable(roots, schemas))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }


@functools.lru_cache(maxsize=64)
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32].upper()


def root(resources: list[Resource]) -> Obj:
    """The /openapi/v3 index: one entry per group/version, addressed by a content hash."""
    paths: Obj = {}
    for gv in sorted({(r.group, r.version) for r in resources}):
        if any(r.custom for r in resources if (r.group, r.version) == gv):
            text = json.dumps(document(resources, *gv), sort_keys=True)
        else:  # built-in documents change only with the client models they come from
            plurals = sorted(r.plural for r in resources if (r.group, r.version) == gv)
            text = json.dumps([importlib.metadata.version("kubernetes"), plurals])
        prefix = _prefix(*gv)
        paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={_digest(text)}"}
    return {"paths": paths}
