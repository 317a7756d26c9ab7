"""Decoding of the protobuf request bodies kubectl's typed clients send.

kubectl posts with `application/vnd.kubernetes.protobuf` from `auth can-i`, `auth whoami`
and the simple `kubectl create` generators. The lab decodes those kinds (self reviews,
Namespace, ConfigMap, Secret, ServiceAccount, with their ObjectMeta); any other protobuf
body gets 415 naming the kind. Responses are always JSON, which clients accept.
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
