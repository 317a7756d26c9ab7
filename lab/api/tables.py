"""`meta.k8s.io/v1` Table rendering, so `kubectl get` prints the usual columns.

Columns follow the real printers for the common kinds; CRDs use their
additionalPrinterColumns (simple `.a.b` JSONPaths); anything else gets NAME and AGE.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lab.api.registry import Resource
from lab.api.selectors import field_value, selector_string
from lab.store import Obj

Column = tuple[str, str, str, int]  # name, type, format, priority (1 = only with -o wide)
Row = Callable[[Obj], list[Any]]


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    return f"{h // (24 * 365)}y{(h // 24) % 365}d"


def age(obj: Obj) -> str:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - created).total_seconds())


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _num(obj: Obj, path: str) -> int:
    value = field_value(obj, path)
    return int(value) if value.lstrip("-").isdigit() else 0


def _pod_row(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec", {}), pod.get("status", {})
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    reason = status.get("reason") or status.get("phase") or "Pending"
    for c in statuses:
        state = c.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        terminated = (state.get("terminated") or {}).get("reason")
        if waiting or terminated:
            reason = waiting or terminated
            break
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return [
        _name(pod),
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts,
        age(pod),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _containers(obj: Obj) -> tuple[str, str]:
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    return (
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
    )


def _deployment_row(d: Obj) -> list[Any]:
    names, images = _containers(d)
    return [
        _name(d),
        f"{_num(d, 'status.readyReplicas')}/{_num(d, 'spec.replicas')}",
        _num(d, "status.updatedReplicas"),
        _num(d, "status.availableReplicas"),
        age(d),
        names,
        images,
        selector_string(d.get("spec", {}).get("selector")) or "<none>",
    ]


def _replicaset_row(r: Obj) -> list[Any]:
    names, images = _containers(r)
    return [
        _name(r),
        _num(r, "spec.replicas"),
        _num(r, "status.replicas"),
        _num(r, "status.readyReplicas"),
        age(r),
        names,
        images,
        selector_string(r.get("spec", {}).get("selector")) or "<none>",
    ]


def _daemonset_row(d: Obj) -> list[Any]:
    node_selector = d.get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector")
    selector = ",".join(f"{k}={v}" for k, v in (node_selector or {}).items()) or "<none>"
    names, images = _containers(d)
    return [
        _name(d),
        _num(d, "status.desiredNumberScheduled"),
        _num(d, "status.currentNumberScheduled"),
        _num(d, "status.numberReady"),
        _num(d, "status.updatedNumberScheduled"),
        _num(d, "status.numberAvailable"),
        selector,
        age(d),
        names,
        images,
    ]


def _node_row(n: Obj) -> list[Any]:
    conditions = n.get("status", {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    status = (
        "Unknown"
        if ready is None
        else {"True": "Ready", "False": "NotReady"}.get(ready.get("status", ""), "Unknown")
    )
    if n.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    prefix = "node-role.kubernetes.io/"
    roles = sorted(
        k[len(prefix) :] for k in (n["metadata"].get("labels") or {}) if k.startswith(prefix)
    )
    info = n.get("status", {}).get("nodeInfo") or {}
    addresses = {
        a.get("type"): a.get("address") for a in n.get("status", {}).get("addresses") or []
    }
    return [
        _name(n),
        status,
        ",".join(roles) or "<none>",
        age(n),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def _service_row(s: Obj) -> list[Any]:
    spec = s.get("spec", {})
    ports = (
        ",".join(
            f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
            f"{p.get('protocol', 'TCP')}"
            for p in spec.get("ports") or []
        )
        or "<none>"
    )
    external = ",".join(spec.get("externalIPs") or []) or "<none>"
    return [
        _name(s),
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        ports,
        age(s),
        ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>",
    ]


def _event_row(e: Obj) -> list[Any]:
    inv = e.get("involvedObject") or {}
    last = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp")
    seen = age({"metadata": {"creationTimestamp": last}}) if last else "<unknown>"
    return [
        seen,
        e.get("type", ""),
        e.get("reason", ""),
        f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
        e.get("message", ""),
    ]


_N, _S, _I = "Name", "string", "integer"
_NAME: Column = ("Name", _S, "name", 0)
_AGE: Column = ("Age", _S, "", 0)

TABLES: dict[tuple[str, str], tuple[list[Column], Row]] = {
    ("", "pods"): (
        [
            _NAME,
            ("Ready", _S, "", 0),
            ("Status", _S, "", 0),
            ("Restarts", _S, "", 0),
            _AGE,
            ("IP", _S, "", 1),
            ("Node", _S, "", 1),
            ("Nominated Node", _S, "", 1),
            ("Readiness Gates", _S, "", 1),
        ],
        _pod_row,
    ),
    ("apps", "deployments"): (
        [
            _NAME,
            ("Ready", _S, "", 0),
            ("Up-to-date", _I, "", 0),
            ("Available", _I, "", 0),
            _AGE,
            ("Containers", _S, "", 1),
            ("Images", _S, "", 1),
            ("Selector", _S, "", 1),
        ],
        _deployment_row,
    ),
    ("apps", "replicasets"): (
        [
            _NAME,
            ("Desired", _I, "", 0),
            ("Current", _I, "", 0),
            ("Ready", _I, "", 0),
            _AGE,
            ("Containers", _S, "", 1),
            ("Images", _S, "", 1),
            ("Selector", _S, "", 1),
        ],
        _replicaset_row,
    ),
    ("apps", "daemonsets"): (
        [
            _NAME,
            ("Desired", _I, "", 0),
            ("Current", _I, "", 0),
            ("Ready", _I, "", 0),
            ("Up-to-date", _I, "", 0),
            ("Available", _I, "", 0),
            ("Node Selector", _S, "", 0),
            _AGE,
            ("Containers", _S, "", 1),
            ("Images", _S, "", 1),
        ],
        _daemonset_row,
    ),
    ("", "nodes"): (
        [
            _NAME,
            ("Status", _S, "", 0),
            ("Roles", _S, "", 0),
            _AGE,
            ("Version", _S, "", 0),
            ("Internal-IP", _S, "", 1),
            ("External-IP", _S, "", 1),
            ("OS-Image", _S, "", 1),
            ("Kernel-Version", _S, "", 1),
            ("Container-Runtime", _S, "", 1),
        ],
        _node_row,
    ),
    ("", "namespaces"): (
        [_NAME, ("Status", _S, "", 0), _AGE],
        lambda o: [_name(o), o.get("status", {}).get("phase", ""), age(o)],
    ),
    ("", "services"): (
        [
            _NAME,
            ("Type", _S, "", 0),
            ("Cluster-IP", _S, "", 0),
            ("External-IP", _S, "", 0),
            ("Port(s)", _S, "", 0),
            _AGE,
            ("Selector", _S, "", 1),
        ],
        _service_row,
    ),
    ("", "configmaps"): (
        [_NAME, ("Data", _I, "", 0), _AGE],
        lambda o: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o)],
    ),
    ("", "secrets"): (
        [_NAME, ("Type", _S, "", 0), ("Data", _I, "", 0), _AGE],
        lambda o: [_name(o), o.get("type", "Opaque"), len(o.get("data") or {}), age(o)],
    ),
    ("", "events"): (
        [
            ("Last Seen", _S, "", 0),
            ("Type", _S, "", 0),
            ("Reason", _S, "", 0),
            ("Object", _S, "", 0),
            ("Message", _S, "", 0),
        ],
        _event_row,
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [_NAME, ("Created At", "date", "", 0)],
        lambda o: [_name(o), o["metadata"].get("creationTimestamp", "")],
    ),
}


_JSON_PATH_STEP = re.compile(
    r"\.([^.\[]+)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]|\[\?\(@\.([\w-]+)==\"([^\"]*)\"\)\]"
)


def json_path(obj: Any, path: str) -> str:
    """A printer column's simple JSONPath (`.a.b`, `['x\\.y/z']`, `[0]`,
    `[?(@.type=="Ready")]`) as text."""
    path = path.strip().removeprefix("{").removesuffix("}").removeprefix("$")
    for m in _JSON_PATH_STEP.finditer(path):
        name, quoted, index, field, wanted = m.groups()
        if field is not None:  # a filter: the first element whose field equals the value
            items = obj if isinstance(obj, list) else []
            obj = next((i for i in items if isinstance(i, dict) and i.get(field) == wanted), None)
        elif index is not None:
            obj = obj[int(index)] if isinstance(obj, list) and int(index) < len(obj) else None
        else:
            key = name if name is not None else re.sub(r"\\(.)", r"\1", quoted)
            obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is None:
            return ""
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return obj if isinstance(obj, str) else json.dumps(obj)


def _custom_columns(res: Resource) -> tuple[list[Column], Row]:
    specs = list(res.printer_columns)
    columns: list[Column] = [_NAME] + [
        (
            c.get("name", ""),
            "string" if c.get("type") == "date" else c.get("type", "string"),
            c.get("format", ""),
            int(c.get("priority", 0)),
        )
        for c in specs
    ]
    if not any(c.get("type") == "date" for c in specs):
        columns.append(_AGE)

    def row(obj: Obj) -> list[Any]:
        cells: list[Any] = [_name(obj)]
        for c in specs:
            value = json_path(obj, str(c.get("jsonPath", "")))
            if c.get("type") == "date" and value:
                value = age({"metadata": {"creationTimestamp": value}})
            cells.append(value)
        if len(columns) > len(cells):
            cells.append(age(obj))
        return cells

    return columns, row


def table(
    res: Resource, objects: list[Obj], *, include: str = "Metadata", list_meta: Obj | None = None
) -> Obj:
    """A Table of `objects`; `include` is the request's includeObject (None|Metadata|Object)."""
    columns, row = TABLES.get((res.group, res.plural)) or (
        _custom_columns(res)
        if res.printer_columns
        else ([_NAME, _AGE], lambda o: [_name(o), age(o)])
    )
    rows = []
    for obj in objects:
        entry: Obj = {"cells": row(obj)}
        if include == "Object":
            entry["object"] = obj
        elif include != "None":
            entry["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(entry)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": [
            {"name": n, "type": t, "format": f, "description": "", "priority": p}
            for n, t, f, p in columns
        ],
        "rows": rows,
    }
