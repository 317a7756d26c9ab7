"""Decoding of the protobuf request bodies kubectl's typed clients send.

kubectl posts with `application/vnd.kubernetes.protobuf` from `auth can-i`, `auth whoami`
and the `kubectl create` generators. The lab decodes those kinds: self reviews, Namespace,
ConfigMap, Secret, ServiceAccount, Deployment, Service, Role, ClusterRole, RoleBinding and
ClusterRoleBinding, from the field numbers of k8s.io/api's generated.proto (`_MESSAGES`
lists the fields the lab knows; unknown ones are skipped). Like Go's JSON encoding with
omitempty, zero values of non-pointer fields are dropped; pointer integers (`replicas`)
keep an explicit 0. Any other protobuf body gets 415 naming the kind. Responses are
always JSON, which clients accept.
"""

from __future__ import annotations

import base64

from lab.store import ApiError, Obj

MAGIC = b"k8s\x00"
Fields = dict[int, list[int | bytes]]

# Field numbers from k8s.io/api/authorization/v1/generated.proto.
_RESOURCE_ATTRIBUTES = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_ATTRIBUTES = {1: "path", 2: "verb"}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Fields:
    """Top-level fields of a protobuf message: number -> values (ints or bytes)."""
    out: Fields = {}
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _text(message: Fields, number: int) -> str:
    values = message.get(number) or [b""]
    value = values[-1]
    return value.decode() if isinstance(value, bytes) else str(value)


def _message(message: Fields, number: int) -> Fields | None:
    values = message.get(number)
    return fields(values[-1]) if values and isinstance(values[-1], bytes) else None


def _strings(message: Fields | None, names: dict[int, str]) -> Obj:
    if message is None:
        return {}
    return {name: _text(message, n) for n, name in names.items() if n in message}


def _map(message: Fields, number: int, *, binary: bool = False) -> dict[str, str]:
    out = {}
    for entry in message.get(number) or []:
        if isinstance(entry, bytes):
            pair = fields(entry)
            value = (pair.get(2) or [b""])[-1]
            if binary and isinstance(value, bytes):
                out[_text(pair, 1)] = base64.b64encode(value).decode()
            else:
                out[_text(pair, 1)] = _text(pair, 2)
    return out


def _list(message: Fields, number: int) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in message.get(number) or []]


def _object_meta(message: Fields | None) -> Obj:
    """ObjectMeta's client-settable fields (k8s.io/apimachinery meta/v1 generated.proto)."""
    if message is None:
        return {}
    meta: Obj = _strings(
        message, {1: "name", 2: "generateName", 3: "namespace", 6: "resourceVersion"}
    )
    for number, name in ((11, "labels"), (12, "annotations")):
        if number in message:
            meta[name] = _map(message, number)
    if 14 in message:
        meta["finalizers"] = _list(message, 14)
    return meta


# message -> field number -> (JSON name, type, repeated). Types: "string", "int" (a
# pointer: 0 is kept), "int?" (0 means unset), "bool", "map" (string to string),
# "quantities" (string to Quantity), "intstr", "meta" (ObjectMeta), or a message name.
_Field = tuple[str, str, bool]
_MESSAGES: dict[str, dict[int, _Field]] = {
    "Deployment": {1: ("metadata", "meta", False), 2: ("spec", "DeploymentSpec", False)},
    "DeploymentSpec": {
        1: ("replicas", "int", False),
        2: ("selector", "LabelSelector", False),
        3: ("template", "PodTemplateSpec", False),
        4: ("strategy", "DeploymentStrategy", False),
        5: ("minReadySeconds", "int?", False),
        6: ("revisionHistoryLimit", "int", False),
        7: ("paused", "bool", False),
        9: ("progressDeadlineSeconds", "int", False),
    },
    "DeploymentStrategy": {
        1: ("type", "string", False),
        2: ("rollingUpdate", "RollingUpdateDeployment", False),
    },
    "RollingUpdateDeployment": {
        1: ("maxUnavailable", "intstr", False),
        2: ("maxSurge", "intstr", False),
    },
    "LabelSelector": {
        1: ("matchLabels", "map", False),
        2: ("matchExpressions", "LabelSelectorRequirement", True),
    },
    "LabelSelectorRequirement": {
        1: ("key", "string", False),
        2: ("operator", "string", False),
        3: ("values", "string", True),
    },
    "PodTemplateSpec": {1: ("metadata", "meta", False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {
        2: ("containers", "Container", True),
        3: ("restartPolicy", "string", False),
        4: ("terminationGracePeriodSeconds", "int", False),
        6: ("dnsPolicy", "string", False),
        7: ("nodeSelector", "map", False),
        8: ("serviceAccountName", "string", False),
        10: ("nodeName", "string", False),
        20: ("initContainers", "Container", True),
        22: ("tolerations", "Toleration", True),
        24: ("priorityClassName", "string", False),
    },
    "Container": {
        1: ("name", "string", False),
        2: ("image", "string", False),
        3: ("command", "string", True),
        4: ("args", "string", True),
        5: ("workingDir", "string", False),
        6: ("ports", "ContainerPort", True),
        7: ("env", "EnvVar", True),
        8: ("resources", "ResourceRequirements", False),
        13: ("terminationMessagePath", "string", False),
        14: ("imagePullPolicy", "string", False),
        20: ("terminationMessagePolicy", "string", False),
    },
    "ContainerPort": {
        1: ("name", "string", False),
        2: ("hostPort", "int?", False),
        3: ("containerPort", "int", False),
        4: ("protocol", "string", False),
        5: ("hostIP", "string", False),
    },
    "EnvVar": {1: ("name", "string", False), 2: ("value", "string", False)},
    "ResourceRequirements": {
        1: ("limits", "quantities", False),
        2: ("requests", "quantities", False),
    },
    "Toleration": {
        1: ("key", "string", False),
        2: ("operator", "string", False),
        3: ("value", "string", False),
        4: ("effect", "string", False),
        5: ("tolerationSeconds", "int", False),
    },
    "Service": {1: ("metadata", "meta", False), 2: ("spec", "ServiceSpec", False)},
    "ServiceSpec": {
        1: ("ports", "ServicePort", True),
        2: ("selector", "map", False),
        3: ("clusterIP", "string", False),
        4: ("type", "string", False),
        5: ("externalIPs", "string", True),
        7: ("sessionAffinity", "string", False),
        10: ("externalName", "string", False),
    },
    "ServicePort": {
        1: ("name", "string", False),
        2: ("protocol", "string", False),
        3: ("port", "int", False),
        4: ("targetPort", "intstr", False),
        5: ("nodePort", "int?", False),
    },
    "Role": {1: ("metadata", "meta", False), 2: ("rules", "PolicyRule", True)},
    "ClusterRole": {1: ("metadata", "meta", False), 2: ("rules", "PolicyRule", True)},
    "PolicyRule": {
        1: ("verbs", "string", True),
        2: ("apiGroups", "string", True),
        3: ("resources", "string", True),
        4: ("resourceNames", "string", True),
        5: ("nonResourceURLs", "string", True),
    },
    "RoleBinding": {
        1: ("metadata", "meta", False),
        2: ("subjects", "Subject", True),
        3: ("roleRef", "RoleRef", False),
    },
    "ClusterRoleBinding": {
        1: ("metadata", "meta", False),
        2: ("subjects", "Subject", True),
        3: ("roleRef", "RoleRef", False),
    },
    "Subject": {
        1: ("kind", "string", False),
        2: ("apiGroup", "string", False),
        3: ("name", "string", False),
        4: ("namespace", "string", False),
    },
    "RoleRef": {
        1: ("apiGroup", "string", False),
        2: ("kind", "string", False),
        3: ("name", "string", False),
    },
}


def _int(value: int | bytes) -> int:
    """A varint as a signed 64-bit integer (negative numbers are ten-byte varints)."""
    number = int(value) if not isinstance(value, bytes) else 0
    return number - (1 << 64) if number >= 1 << 63 else number


def _value(kind: str, value: int | bytes) -> object:
    if kind == "string":
        return value.decode() if isinstance(value, bytes) else str(value)
    if kind in ("int", "int?"):
        return _int(value)
    if kind == "bool":
        return bool(value)
    if kind == "intstr":
        message = fields(value) if isinstance(value, bytes) else {}
        return (
            _text(message, 3)
            if _int((message.get(1) or [0])[-1]) == 1
            else _int((message.get(2) or [0])[-1])
        )
    if kind == "meta":
        return _object_meta(fields(value) if isinstance(value, bytes) else {})
    return _decode_message(kind, fields(value) if isinstance(value, bytes) else {})


def _decode_message(name: str, message: Fields) -> Obj:
    """A message as JSON, dropping zero values the way omitempty does."""
    out: Obj = {}
    for number, (json_name, kind, repeated) in _MESSAGES[name].items():
        values = message.get(number)
        if not values:
            continue
        if kind == "map":
            decoded: object = _map(message, number)
        elif kind == "quantities":
            decoded = _quantities(message, number)
        elif repeated:
            decoded = [_value(kind, v) for v in values]
        else:
            decoded = _value(kind, values[-1])
        if decoded in ("", False, [], {}) or (decoded == 0 and kind == "int?"):
            continue
        out[json_name] = decoded
    return out


def _quantities(message: Fields, number: int) -> dict[str, str]:
    """A map<string, Quantity> (Quantity is a message holding its string form)."""
    out = {}
    for entry in message.get(number) or []:
        if isinstance(entry, bytes):
            pair = fields(entry)
            quantity = (pair.get(2) or [b""])[-1]
            out[_text(pair, 1)] = _text(fields(quantity), 1) if isinstance(quantity, bytes) else ""
    return out


def _kind_body(kind: str, raw: Fields) -> Obj | None:
    """The fields after `metadata` for the core kinds `kubectl create` posts."""
    if kind == "Namespace":
        spec = _message(raw, 2)
        return {"spec": {"finalizers": _list(spec, 1)}} if spec else {}
    if kind == "ConfigMap":
        body: Obj = {"data": _map(raw, 2)} if 2 in raw else {}
        if 3 in raw:
            body["binaryData"] = _map(raw, 3, binary=True)
        return body
    if kind == "Secret":
        body = {"data": _map(raw, 2, binary=True)} if 2 in raw else {}
        if 3 in raw:
            body["type"] = _text(raw, 3)
        if 4 in raw:
            body["stringData"] = _map(raw, 4)
        return body
    if kind == "ServiceAccount":
        return {}
    if kind in _MESSAGES:
        body = _decode_message(kind, raw)
        body.pop("metadata", None)  # decoded by the caller
        return body
    return None


def decode(body: bytes) -> Obj:
    """The JSON form of a protobuf-encoded self review; 415 for anything else."""
    try:
        if not body.startswith(MAGIC):
            raise ValueError("missing the k8s protobuf magic prefix")
        envelope = fields(body[len(MAGIC) :])
        type_meta = _message(envelope, 1) or {}
        api_version, kind = _text(type_meta, 1), _text(type_meta, 2)
        raw = _message(envelope, 2) or {}
        obj: Obj = {"apiVersion": api_version, "kind": kind, "metadata": {}}
        if kind == "SelfSubjectAccessReview":
            spec = _message(raw, 2) or {}
            obj["spec"] = {}
            resource = _strings(_message(spec, 1), _RESOURCE_ATTRIBUTES)
            non_resource = _strings(_message(spec, 2), _NON_RESOURCE_ATTRIBUTES)
            if resource:
                obj["spec"]["resourceAttributes"] = resource
            if non_resource:
                obj["spec"]["nonResourceAttributes"] = non_resource
            return obj
        if kind in ("SelfSubjectReview", "SelfSubjectRulesReview"):
            spec = _message(raw, 2) or {}
            obj["spec"] = {"namespace": _text(spec, 1)} if 1 in spec else {}
            return obj
        rest = _kind_body(kind, raw)
        if rest is not None:
            obj["metadata"] = _object_meta(_message(raw, 1))
            obj.update(rest)
            return obj
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"cannot decode protobuf body: {exc}") from None
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the lab cannot decode protobuf for {kind or 'this kind'}; "
        "send application/json (for example with kubectl apply)",
    )
