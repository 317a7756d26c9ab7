"""Admission the API server itself performs: defaulting and basic validation.

Only what clients notice is checked: names, labels/annotations, selectors matching pod
templates, containers with a name and an image, volume mounts naming a volume of the pod,
probes with exactly one handler, container ports in range. Failures are 422 Invalid with
`details.causes`, shaped like the API server's.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from lab.api.registry import Resource
from lab.api.selectors import label_selector, selector_string
from lab.store import ApiError, Obj, now_iso

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# Kinds whose names must be DNS labels rather than DNS subdomains.
_LABEL_NAMED = {"namespaces", "services"}
_WORKLOADS = {
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "daemonsets"),
    ("apps", "statefulsets"),
}


class _Causes:
    def __init__(self) -> None:
        self.items: list[Obj] = []

    def add(self, reason: str, field: str, message: str) -> None:
        self.items.append({"reason": reason, "field": field, "message": message})


def _check_name(causes: _Causes, res: Resource, obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    if not name:
        causes.add(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        )
        return
    if res.plural in _LABEL_NAMED:
        if len(name) > 63 or not _LABEL.match(name):
            causes.add(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": a '
                "lowercase RFC 1123 label must consist of lower case alphanumeric "
                "characters or '-', and must start and end with an alphanumeric character",
            )
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        causes.add(
            "FieldValueInvalid",
            "metadata.name",
            f'Invalid value: "{name}": a '
            "lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character",
        )


def _valid_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED.match(name))


def _check_map(causes: _Causes, field: str, values: Any, *, check_values: bool) -> None:
    if values is None:
        return
    if not isinstance(values, dict):
        causes.add("FieldValueInvalid", field, "Invalid value: must be a map of strings")
        return
    for key, value in values.items():
        if not _valid_key(key):
            causes.add(
                "FieldValueInvalid",
                field,
                f'Invalid value: "{key}": name part must '
                "consist of alphanumeric characters, '-', '_' or '.', and must start "
                "and end with an alphanumeric character",
            )
        if not isinstance(value, str):
            causes.add("FieldValueInvalid", f"{field}.{key}", "Invalid value: must be a string")
        elif check_values and value and (len(value) > 63 or not _QUALIFIED.match(value)):
            causes.add(
                "FieldValueInvalid",
                field,
                f'Invalid value: "{value}": a valid label '
                "must be an empty string or consist of alphanumeric characters, '-', "
                "'_' or '.', and must start and end with an alphanumeric character",
            )


_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _check_pod_spec(causes: _Causes, field: str, spec: Any) -> None:
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not containers:
        causes.add("FieldValueRequired", f"{field}.containers", "Required value")
        return
    volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    for n, c in enumerate(containers):
        at = f"{field}.containers[{n}]"
        if not c.get("name"):
            causes.add("FieldValueRequired", f"{at}.name", "Required value")
        if not c.get("image"):
            causes.add("FieldValueRequired", f"{at}.image", "Required value")
        for m, mount in enumerate(c.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                causes.add(
                    "FieldValueNotFound",
                    f"{at}.volumeMounts[{m}].name",
                    f'Not found: "{mount.get("name")}"',
                )
        for probe in _PROBES:
            handlers = [h for h in _PROBE_HANDLERS if (c.get(probe) or {}).get(h)]
            if probe in c and not handlers:
                causes.add(
                    "FieldValueRequired",
                    f"{at}.{probe}",
                    "Required value: must specify a handler type",
                )
            elif len(handlers) > 1:
                causes.add(
                    "FieldValueForbidden",
                    f"{at}.{probe}.{handlers[1]}",
                    "Forbidden: may not specify more than 1 handler type",
                )
        for p, port in enumerate(c.get("ports") or []):
            number = port.get("containerPort")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                causes.add(
                    "FieldValueInvalid",
                    f"{at}.ports[{p}].containerPort",
                    f"Invalid value: {number}: must be between 1 and 65535, inclusive",
                )


def validate(res: Resource, obj: Obj) -> None:
    """Raises 422 Invalid listing every problem found in `obj`."""
    causes = _Causes()
    meta = obj["metadata"]
    _check_name(causes, res, obj)
    _check_map(causes, "metadata.labels", meta.get("labels"), check_values=True)
    _check_map(causes, "metadata.annotations", meta.get("annotations"), check_values=False)
    key = (res.group, res.plural)
    raw_spec = obj.get("spec")
    spec: Obj = raw_spec if isinstance(raw_spec, dict) else {}
    if key == ("", "pods"):
        _check_pod_spec(causes, "spec", spec)
    elif key in _WORKLOADS:
        template = spec.get("template") or {}
        if not spec.get("selector"):
            causes.add("FieldValueRequired", "spec.selector", "Required value")
        else:
            labels = {"metadata": {"labels": (template.get("metadata") or {}).get("labels")}}
            if not label_selector(selector_string(spec["selector"]))(labels):
                causes.add(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    "Invalid value: selector does not match template labels",
                )
        _check_pod_spec(causes, "spec.template.spec", template.get("spec"))
        if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
            causes.add("FieldValueInvalid", "spec.replicas", "Invalid value: must be >= 0")
    elif key in (("", "configmaps"), ("", "secrets")):
        for field in ("data", "binaryData"):
            for k in obj.get(field) or {}:
                if not _CONFIG_KEY.match(k):
                    causes.add(
                        "FieldValueInvalid",
                        f"{field}[{k}]",
                        "Invalid value: a valid "
                        "config key must consist of alphanumeric characters, '-', '_' or '.'",
                    )
    if causes.items:
        kind = f"{res.kind}.{res.group}" if res.group else res.kind
        name = meta.get("name", "")
        summary = ", ".join(f"{c['field']}: {c['message']}" for c in causes.items)
        raise ApiError(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: [{summary}]'
            if len(causes.items) > 1
            else f'{kind} "{name}" is invalid: {summary}',
            {"name": name, "group": res.group, "kind": res.kind, "causes": causes.items},
        )


# ---- defaulting ------------------------------------------------------------------------


def _default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for c in spec.get("containers") or []:
        image = str(c.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")


def default(res: Resource, obj: Obj, *, cluster_ip: str = "") -> None:
    """Fills the defaults a real API server adds, in place."""
    key = (res.group, res.plural)
    spec = obj.get("spec")
    if key == ("", "namespaces"):
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"][
            "name"
        ]
    elif key == ("", "pods") and isinstance(spec, dict):
        _default_pod_spec(spec)
    elif key in _WORKLOADS and isinstance(spec, dict):
        if res.plural != "daemonsets":
            spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        if res.plural == "deployments":
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
            )
        elif res.plural == "daemonsets":
            spec.setdefault(
                "updateStrategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            )
        template_spec = (spec.get("template") or {}).get("spec")
        if isinstance(template_spec, dict):
            _default_pod_spec(template_spec)
    elif key == ("", "services") and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if cluster_ip and spec.get("type") != "ExternalName":
            spec.setdefault("clusterIP", cluster_ip)
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
    elif key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    elif key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        names = (obj.get("spec") or {}).get("names") or {}
        obj["status"] = {
            "acceptedNames": names,
            "storedVersions": [
                v["name"] for v in (obj.get("spec") or {}).get("versions") or [] if v.get("storage")
            ],
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": now_iso(),
                }
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
