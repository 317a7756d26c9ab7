"""CRUD for every served resource: get, list, watch, create, update, patch, delete,
deletecollection, and the status/scale subresources, plus the self-review endpoints.

Handlers work on one cluster's `ObjectStore`; they raise `ApiError` for every client
mistake and the server turns it into a `Status` body.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from lab.api import applying, logs, metrics, patching, protobuf, registry, tables, validation
from lab.api.query import int_param
from lab.api.registry import NAMESPACES, Resource
from lab.api.selectors import field_selector, label_selector, selector_string
from lab.api.watching import serve_watch
from lab.auth import ALL_VERBS, User
from lab.store import ApiError, Obj, ObjectStore

# Namespaces a real cluster refuses to delete.
PROTECTED_NAMESPACES = {"default", "kube-system", "kube-public"}
_TABLE = "as=Table"


@dataclass(frozen=True)
class Target:
    """What a resource URL names."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str = ""
    subresource: str = ""


def parse_path(path: str) -> Target | None:
    """Splits `/api/v1/...` and `/apis/<g>/<v>/...` resource paths; None for other paths."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    return Target(group, version, rest[0], namespace, *(rest[1:] + ["", ""])[:2])


def status_body(error: ApiError) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": error.message,
        "reason": error.reason,
        "code": error.code,
    }
    if error.details:
        body["details"] = error.details
    return body


def success(details: Obj) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def forbidden(user: User, verb: str, res_name: str, group: str, namespace: str | None) -> ApiError:
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return ApiError(
        403,
        "Forbidden",
        f'{res_name} is forbidden: User "{user.name}" cannot '
        f'{verb} resource "{res_name}" in API group "{group}"{where}',
        {"kind": res_name, "group": group},
    )


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
    )


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise ApiError(400, "BadRequest", "the request body is empty")
    content_type = request.content_type
    if "protobuf" in content_type:
        return protobuf.decode(raw)
    if "cbor" in content_type:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown "
            f"format - accepted media types include: application/json, "
            f"application/yaml ({content_type})",
        )
    try:
        if "yaml" not in content_type:
            return json.loads(raw)
        # JSON (a YAML document too, as clients send apply patches) is parsed as JSON: the
        # pure-Python YAML parser was a fifth of the lab's time under a fleet-wide sync.
        if raw.lstrip().startswith(b"{"):
            with contextlib.suppress(ValueError):
                return json.loads(raw)
        return yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, "BadRequest", f"the request body is not valid: {exc}") from None


def _verb(method: str, target: Target, watch: bool) -> str:
    if method == "GET":
        if target.name:
            return "get"
        return "watch" if watch else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
        "delete" if target.name else "deletecollection"
    )


class ResourceHandler:
    """Serves one request on one cluster's store."""

    def __init__(self, request: web.Request, *, store: ObjectStore, user: User, target: Target):
        self.request = request
        self.store = store
        self.user = user
        self.target = target
        self.query = request.query
        self.res: Resource = registry.lookup(store, target.group, target.version, target.plural)
        self.dry_run = self._dry_run()

    def _dry_run(self) -> bool:
        values = self.query.getall("dryRun", [])
        for value in values:
            if value != "All":
                raise ApiError(
                    400,
                    "BadRequest",
                    f"unsupported dryRun value {value!r} (only 'All' is supported)",
                )
        return bool(values)

    # ---- dispatch ----------------------------------------------------------------------

    async def handle(self) -> web.StreamResponse:
        res, target, method = self.res, self.target, self.request.method
        if target.namespace is not None and not res.namespaced:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested "
                f"resource ({res.plural} is cluster-scoped)",
            )
        watch = self.query.get("watch") in ("1", "true")
        verb = _verb(method, target, watch)
        if verb not in res.verbs:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if res.plural in registry.VIRTUAL:
            return await self._review()
        if not self.user.allows(
            verb, group=res.group, resource=res.plural, subresource=target.subresource
        ):
            raise forbidden(
                self.user,
                verb,
                res.qualified
                if not target.subresource
                else f"{res.qualified}/{target.subresource}",
                res.group,
                target.namespace,
            )
        if target.subresource and target.subresource not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (
            res.namespaced
            and not target.namespace
            and verb not in ("list", "watch", "deletecollection")
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource == "log":
            return await logs.serve(self.request, self.store, target.namespace or "", target.name)
        if verb == "get":
            return self._respond(self._get_sub(self._current()))
        if verb == "list":
            return self._list()
        if verb == "watch":
            return await serve_watch(
                self.request,
                store=self.store,
                res=res,
                namespace=target.namespace,
                matches=self._matcher(),
                render=self._render_event,
                status_body=status_body,
            )
        if verb == "create":
            return await self._create()
        if verb == "update":
            return await self._update()
        if verb == "patch":
            return await self._patch()
        if verb == "delete":
            return await self._delete()
        return await self._delete_collection()

    # ---- output ------------------------------------------------------------------------

    def _wants_table(self) -> bool:
        return _TABLE in self.request.headers.get("Accept", "")

    def _shape(self, obj: Obj) -> Obj:
        if obj.get("apiVersion") != self.res.api_version or "kind" not in obj:
            obj = dict(obj, apiVersion=self.res.api_version, kind=self.res.kind)
        return obj

    def _render_event(self, obj: Obj) -> Any:
        if self._wants_table():
            return tables.table(
                self.res, [obj], include=self.query.get("includeObject", "Metadata")
            )
        return self._shape(obj)

    def _respond(self, obj: Obj, status: int = 200) -> web.Response:
        if self._wants_table() and obj.get("kind") == self.res.kind:
            return json_response(
                tables.table(self.res, [obj], include=self.query.get("includeObject", "Metadata")),
                status,
            )
        return json_response(self._shape(obj) if obj.get("kind") == self.res.kind else obj, status)

    # ---- reads -------------------------------------------------------------------------

    def _current(self) -> Obj:
        if self.res.group == registry.METRICS:
            return metrics.find(self.store, self.res, self.target.namespace or "", self.target.name)
        return self.store.get(self.res.key, self.target.namespace or "", self.target.name)

    def _find(self) -> Obj | None:
        return self.store.find(self.res.key, self.target.namespace or "", self.target.name)

    def _matcher(self) -> Any:
        labels = label_selector(self.query.get("labelSelector"))
        fields = field_selector(self.query.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj)

    def _selected(self) -> list[Obj]:
        matches = self._matcher()
        if self.res.group == registry.METRICS:
            items = metrics.collect(self.store, self.res, self.target.namespace)
        else:
            items = self.store.list(self.res.key, self.target.namespace)
        return [o for o in items if matches(o)]

    def _list(self) -> web.Response:
        items = self._selected()
        meta: Obj = {"resourceVersion": str(self.store.revision)}
        token = self.query.get("continue")
        if token:
            try:
                after = json.loads(base64.urlsafe_b64decode(token.encode()))
                start = (after["ns"], after["name"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "BadRequest", "invalid continue token") from None
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start
            ]
        limit = int_param(self.query, "limit")
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"ns": last.get("namespace", ""), "name": last["name"]}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if self._wants_table():
            return json_response(
                tables.table(
                    self.res,
                    items,
                    include=self.query.get("includeObject", "Metadata"),
                    list_meta=meta,
                )
            )
        return json_response(
            {
                "kind": f"{self.res.kind}List",
                "apiVersion": self.res.api_version,
                "metadata": meta,
                "items": [self._shape(o) for o in items],
            }
        )

    # ---- writes ------------------------------------------------------------------------

    def _check_identity(self, obj: Any, *, name_required: bool) -> Obj:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != self.res.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the kind of the object ({kind}) does not match the resource ({self.res.kind})",
            )
        if api_version and api_version.rpartition("/")[0] != self.res.group:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) "
                f"does not match the expected API version ({self.res.api_version})",
            )
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = self.res.api_version, self.res.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if self.res.namespaced:
            ns = self.target.namespace or ""
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not "
                    "match the namespace sent on the request",
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if name_required and self.target.name and meta.get("name") != self.target.name:
            if meta.get("name"):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the name of the object "
                    f"({meta.get('name')}) does not match the name on the URL "
                    f"({self.target.name})",
                )
            meta["name"] = self.target.name
        return obj

    def _check_namespace(self) -> None:
        if not self.res.namespaced:
            return
        ns = self.store.find(NAMESPACES, "", self.target.namespace or "")
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{self.target.namespace}" not found',
                {"name": self.target.namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f'{self.res.qualified} "" is forbidden: unable '
                f"to create new content in namespace {self.target.namespace} "
                "because it is being terminated",
                {
                    "kind": self.res.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {self.target.namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def _admit(self, obj: Obj) -> Obj:
        validation.default(self.res, obj, cluster_ip=self._cluster_ip())
        validation.validate(self.res, obj)
        return obj

    def _cluster_ip(self) -> str:
        n = self.store.revision % 65000 + 10
        return f"10.96.{n // 250}.{n % 250 + 1}"

    async def _create(self) -> web.Response:
        if self.target.name or self.target.subresource:
            raise ApiError(405, "MethodNotAllowed", "POST is not allowed on a named resource")
        obj = self._check_identity(await read_body(self.request), name_required=False)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        for f in (
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "managedFields",
        ):
            meta.pop(f, None)
        self._check_namespace()
        self._admit(obj)
        created = self.store.create(self.res.key, obj, dry_run=self.dry_run)
        return self._respond(created, 201)

    def _record_manager(self, live: Obj, new: Obj) -> None:
        """managedFields for an update/patch: `fieldManager`, else the client's user agent
        up to its first '/' (as the API server names managers)."""
        agent = self.request.headers.get("User-Agent", "").split("/", 1)[0]
        manager = self.query.get("fieldManager", "") or agent
        applying.record_update(live, new, manager=manager, api_version=self.res.api_version)

    def _carry_managed_fields(self, new: Obj, live: Obj) -> None:
        if "managedFields" not in new["metadata"] and live["metadata"].get("managedFields"):
            new["metadata"]["managedFields"] = live["metadata"]["managedFields"]

    async def _update(self) -> web.Response:
        body = await read_body(self.request)
        if self.target.subresource == "scale":
            return self._write_scale(body)
        obj = self._check_identity(body, name_required=True)
        live = self._current()
        if self.target.subresource == "finalize":
            finalized = copy.deepcopy(live)
            finalized.setdefault("spec", {})["finalizers"] = list(
                (obj.get("spec") or {}).get("finalizers") or []
            )
            return self._respond(self.store.update(self.res.key, finalized, dry_run=self.dry_run))
        self._carry_managed_fields(obj, live)
        sub = self.target.subresource or None
        if sub is None:
            self._record_manager(live, obj)
            self._admit(obj)
        updated = self.store.update(self.res.key, obj, subresource=sub, dry_run=self.dry_run)
        return self._respond(self._get_sub(updated))

    async def _patch(self) -> web.Response:
        content_type = self.request.content_type
        body = await read_body(self.request)
        if content_type == "application/apply-patch+yaml" or content_type.startswith(
            "application/apply-patch"
        ):
            return self._apply(body)
        live = self._current()
        if self.target.subresource == "scale":
            return self._write_scale(self._patched(self._scale(live), body, content_type))
        patched = self._patched(live, body, content_type)
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patch produced something other than an object")
        patched = self._check_identity(patched, name_required=True)
        if patched["metadata"].get("name") != self.target.name:
            raise ApiError(
                422,
                "Invalid",
                "metadata.name: Invalid value: the name cannot be changed by a patch",
            )
        # A patch applies to the current state; only an explicit resourceVersion conflicts.
        expected = (
            (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        )
        patched["metadata"]["resourceVersion"] = expected or live["metadata"]["resourceVersion"]
        sub = self.target.subresource or None
        if sub is None:
            self._record_manager(live, patched)
            self._admit(patched)
        updated = self.store.update(self.res.key, patched, subresource=sub, dry_run=self.dry_run)
        return self._respond(self._get_sub(updated))

    def _patched(self, live: Obj, body: Any, content_type: str) -> Any:
        if content_type == "application/json-patch+json":
            return patching.json_patch(live, body)
        if content_type == "application/merge-patch+json":
            return patching.merge_patch(live, body)
        if content_type == "application/strategic-merge-patch+json":
            if self.res.custom:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not "
                    "supported for custom resources; use a merge or JSON patch",
                )
            return patching.strategic_merge_patch(live, body)
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown "
            f"format - accepted media types include: application/json-patch+json, "
            f"application/merge-patch+json, application/apply-patch+yaml, "
            f"application/strategic-merge-patch+json ({content_type})",
        )

    def _apply(self, body: Any) -> web.Response:
        applied = self._check_identity(body, name_required=True)
        if not applied["metadata"].get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        live = self._find()
        force = self.query.get("force") in ("true", "1")
        manager = self.query.get("fieldManager", "")
        if self.target.subresource:
            raise ApiError(
                415, "UnsupportedMediaType", "apply to subresources is not supported by the lab"
            )
        result = applying.apply(
            live, applied, manager=manager, force=force, api_version=self.res.api_version
        )
        result["apiVersion"], result["kind"] = self.res.api_version, self.res.kind
        self._admit(result)
        if live is None:
            self._check_namespace()
            for f in ("resourceVersion", "uid", "creationTimestamp"):
                result["metadata"].pop(f, None)
            return self._respond(self.store.create(self.res.key, result, dry_run=self.dry_run), 201)
        result["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        return self._respond(self.store.update(self.res.key, result, dry_run=self.dry_run))

    # ---- scale / status ----------------------------------------------------------------

    def _get_sub(self, obj: Obj) -> Obj:
        if self.target.subresource == "scale":
            return self._scale(obj)
        return obj

    def _scale(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": selector_string(obj.get("spec", {}).get("selector")),
            },
        }

    def _write_scale(self, scale: Any) -> web.Response:
        if not isinstance(scale, dict) or not isinstance(
            scale.get("spec", {}).get("replicas"), int
        ):
            raise ApiError(
                422, "Invalid", 'Scale.autoscaling "" is invalid: spec.replicas: Required value'
            )
        replicas = scale["spec"]["replicas"]
        if replicas < 0:
            raise ApiError(
                422,
                "Invalid",
                f'Scale.autoscaling "{self.target.name}" is invalid: '
                "spec.replicas: Invalid value: must be greater than or equal to 0",
            )
        live = self._current()
        new = copy.deepcopy(live)
        new.setdefault("spec", {})["replicas"] = replicas
        expected = (scale.get("metadata") or {}).get("resourceVersion")
        new["metadata"]["resourceVersion"] = expected or live["metadata"]["resourceVersion"]
        updated = self.store.update(self.res.key, new, dry_run=self.dry_run)
        return json_response(self._scale(updated))

    # ---- deletes -----------------------------------------------------------------------

    async def _delete_options(self) -> Obj:
        """DeleteOptions from the body and query; a body `dryRun: [All]` counts too."""
        raw = await self.request.read()
        try:
            options = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ApiError(400, "BadRequest", "DeleteOptions must be JSON") from None
        if not isinstance(options, dict):
            raise ApiError(400, "BadRequest", "DeleteOptions must be a JSON object")
        if "propagationPolicy" in self.query:
            options["propagationPolicy"] = self.query["propagationPolicy"]
        if "All" in (options.get("dryRun") or []):
            self.dry_run = True
        return options

    async def _delete(self) -> web.Response:
        options = await self._delete_options()
        live = self._current()
        pre = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if pre.get(field) and pre[field] != live["metadata"].get(field):
                raise ApiError(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: "
                    f"{pre[field]}, {field} in object meta: "
                    f"{live['metadata'].get(field)}",
                )
        if self.dry_run:
            return self._respond(live)
        result = self.delete_object(live, orphan=options.get("propagationPolicy") == "Orphan")
        if result is None:
            return json_response(
                success(
                    {
                        "name": self.target.name,
                        "group": self.res.group,
                        "kind": self.res.plural,
                        "uid": live["metadata"].get("uid"),
                    }
                )
            )
        return self._respond(result, 200)

    def delete_object(self, live: Obj, *, orphan: bool = False) -> Obj | None:
        """Deletes `live`; returns it when deletion is pending (finalizers), else None."""
        meta = live["metadata"]
        ns = meta.get("namespace", "")
        if self.res.key == NAMESPACES:
            if meta["name"] in PROTECTED_NAMESPACES:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'namespaces "{meta["name"]}" is forbidden: this namespace may not be deleted',
                )
            return terminate_namespace(self.store, meta["name"])
        result = self.store.delete(self.res.key, ns, meta["name"])
        if (
            result["metadata"].get("deletionTimestamp")
            and self.store.find(self.res.key, ns, meta["name"]) is not None
        ):
            return result
        if not orphan:
            collect_garbage(self.store, str(meta.get("uid")))
        return None

    async def _delete_collection(self) -> web.Response:
        options = await self._delete_options()
        items = self._selected()
        if not self.dry_run:
            for obj in items:
                if (
                    self.store.find(
                        self.res.key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                    )
                    is not None
                ):
                    self.delete_object(obj, orphan=options.get("propagationPolicy") == "Orphan")
        return json_response(
            {
                "kind": f"{self.res.kind}List",
                "apiVersion": self.res.api_version,
                "metadata": {"resourceVersion": str(self.store.revision)},
                "items": [self._shape(o) for o in items],
            }
        )

    # ---- self reviews ------------------------------------------------------------------

    async def _review(self) -> web.Response:
        body = await read_body(self.request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        review = dict(body, apiVersion=self.res.api_version, kind=self.res.kind)
        review.setdefault("metadata", {})
        if self.res.plural == "selfsubjectreviews":
            review["status"] = {
                "userInfo": {"username": self.user.name, "groups": self.user.groups}
            }
        elif self.res.plural == "selfsubjectaccessreviews":
            review["status"] = access_review(self.user, body.get("spec") or {})
        else:
            verbs = sorted(self.user.verbs) if "*" not in self.user.verbs else ["*"]
            review["status"] = {
                "resourceRules": [
                    {"verbs": verbs, "apiGroups": ["*"], "resources": sorted(self.user.resources)}
                ],
                "nonResourceRules": [
                    {
                        "verbs": ["get"],
                        "nonResourceURLs": [
                            "/api",
                            "/api/*",
                            "/apis",
                            "/apis/*",
                            "/version",
                            "/healthz",
                            "/readyz",
                            "/livez",
                        ],
                    }
                ],
                "incomplete": False,
            }
        return json_response(review, 201)


def access_review(user: User, spec: Obj) -> Obj:
    """The status of a SelfSubjectAccessReview for `user`."""
    attrs = spec.get("resourceAttributes")
    if attrs:
        verb = attrs.get("verb", "")
        verbs = ALL_VERBS if verb == "*" else (verb,)
        allowed = all(
            user.allows(
                v,
                group=attrs.get("group", ""),
                resource=attrs.get("resource", ""),
                subresource=attrs.get("subresource", ""),
            )
            for v in verbs
        )
    else:
        allowed = (spec.get("nonResourceAttributes") or {}).get("verb") == "get" or (
            "*" in user.verbs and "*" in user.resources
        )
    return {"allowed": allowed}


def collect_garbage(store: ObjectStore, owner_uid: str) -> None:
    """Deletes the dependents of a removed owner (background propagation), recursively."""
    kinds = store.keys()
    for key in kinds:
        for obj in list(store.list(key)):
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            meta = obj["metadata"]
            try:
                gone = store.delete(key, meta.get("namespace", ""), meta["name"])
            except ApiError:
                continue  # already deleted by a controller
            if store.find(key, meta.get("namespace", ""), meta["name"]) is None:
                collect_garbage(store, str(gone["metadata"].get("uid")))


def terminate_namespace(store: ObjectStore, name: str) -> Obj:
    """Marks the namespace Terminating and deleted; it stays while `spec.finalizers` holds
    `kubernetes`, which the namespace controller removes once the content is gone."""
    current = store.get(NAMESPACES, "", name)
    if current["metadata"].get("deletionTimestamp"):
        return current
    terminating = copy.deepcopy(current)
    terminating.setdefault("status", {})["phase"] = "Terminating"
    store.update(NAMESPACES, terminating, subresource="status")
    return store.delete(NAMESPACES, "", name)
