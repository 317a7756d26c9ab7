"""The EndpointSlice and Endpoints controllers for Services with a selector.

For each such Service, the pods it selects that have an IP (and are not being deleted)
become endpoints: EndpointSlices (discovery.k8s.io/v1, labelled
`kubernetes.io/service-name`, one per distinct resolution of the Service's ports, or one
empty placeholder) and the legacy Endpoints object of the same name (ready pods under
`addresses`, others under `notReadyAddresses`). Readiness follows the pod's Ready
condition (or every pod counts as ready with `publishNotReadyAddresses`). Services
without a selector are left alone, as upstream, so users may manage their endpoints.
"""

from __future__ import annotations

import contextlib
import copy
import random
from typing import Any

from lab.api.selectors import label_selector, selector_string
from lab.controllers.common import PODS, Timers, condition, owner_ref
from lab.store import ApiError, Event, Obj, ObjectStore, ResourceKey

SERVICES = ResourceKey("", "services")
ENDPOINTS = ResourceKey("", "endpoints")
ENDPOINTSLICES = ResourceKey("discovery.k8s.io", "endpointslices")
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"

_Ports = tuple[tuple[str, int, str, str], ...]  # (name, port, protocol, appProtocol)


def _selected(service: Obj) -> Any:
    selector = (service.get("spec") or {}).get("selector") or {}
    return label_selector(selector_string({"matchLabels": selector}))


def _resolve(service: Obj, pod: Obj) -> _Ports | None:
    """The Service's ports as this pod serves them; None when a named port is missing."""
    out = []
    containers = pod["spec"].get("containers", [])
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        protocol = port.get("protocol", "TCP")
        if isinstance(target, str) and not target.isdigit():
            numbers = [
                p["containerPort"]
                for c in containers
                for p in c.get("ports") or []
                if p.get("name") == target and p.get("protocol", "TCP") == protocol
            ]
            if not numbers:
                return None
            target = numbers[0]
        out.append((port.get("name", ""), int(target), protocol, port.get("appProtocol", "")))
    return tuple(out)


class EndpointController:
    def __init__(self, store: ObjectStore, *, timers: Timers) -> None:
        self.store = store
        self.timers = timers
        self._rng = random.Random(f"{store.cluster}/endpoints")
        self._active = False

    def start(self) -> None:
        self._active = True
        self.store.add_listener(self.on_event)
        for svc in self.store.list(SERVICES):
            self._queue(svc["metadata"]["namespace"], svc["metadata"]["name"])

    def stop(self) -> None:
        self._active = False
        self.timers.cancel_all()

    def on_event(self, event: Event) -> None:
        if not self._active:
            return
        meta = event.object["metadata"]
        if event.key == SERVICES:
            self._queue(meta["namespace"], meta["name"])
        elif event.key == PODS:
            for svc in self.store.list(SERVICES, meta["namespace"]):
                if (svc.get("spec") or {}).get("selector"):
                    self._queue(meta["namespace"], svc["metadata"]["name"])
        elif event.key in (ENDPOINTSLICES, ENDPOINTS) and event.type != "ADDED":
            name = (meta.get("labels") or {}).get(SERVICE_NAME) or meta["name"]
            self._queue(meta["namespace"], name)

    def _queue(self, ns: str, name: str) -> None:
        self.timers.soon(("svc", ns, name), lambda: self.reconcile(ns, name))

    def reconcile(self, ns: str, name: str) -> None:
        service = self.store.find(SERVICES, ns, name)
        slices = [
            s
            for s in self.store.list(ENDPOINTSLICES, ns)
            if (s["metadata"].get("labels") or {}).get(SERVICE_NAME) == name
            and (s["metadata"].get("labels") or {}).get(MANAGED_BY) == CONTROLLER
        ]
        if (
            service is None
            or service["metadata"].get("deletionTimestamp")
            or not (service.get("spec") or {}).get("selector")
        ):
            for s in slices:
                self._delete(ENDPOINTSLICES, s)
            endpoints = self.store.find(ENDPOINTS, ns, name)
            if service is None and endpoints is not None:
                self._delete(ENDPOINTS, endpoints)  # not owned: the controller removes it
            return
        groups = self._groups(service)
        self._write_slices(service, slices, groups)
        self._write_endpoints(service, groups)

    def _groups(self, service: Obj) -> dict[_Ports, list[tuple[Obj, bool]]]:
        """Selected pods grouped by port resolution, each with its readiness."""
        matches = _selected(service)
        publish = bool(service["spec"].get("publishNotReadyAddresses"))
        groups: dict[_Ports, list[tuple[Obj, bool]]] = {}
        for pod in self.store.list(PODS, service["metadata"]["namespace"]):
            status = pod.get("status") or {}
            if (
                not matches(pod)
                or not status.get("podIP")
                or pod["metadata"].get("deletionTimestamp")
                or status.get("phase") in ("Succeeded", "Failed")
            ):
                continue
            ports = _resolve(service, pod)
            if ports is None:
                continue
            cond = condition(pod, "Ready")
            ready = publish or (cond is not None and cond["status"] == "True")
            groups.setdefault(ports, []).append((pod, ready))
        return groups

    def _write_slices(
        self, service: Obj, slices: list[Obj], groups: dict[_Ports, list[tuple[Obj, bool]]]
    ) -> None:
        meta = service["metadata"]
        labels = dict(meta.get("labels") or {})
        labels.pop("service.kubernetes.io/headless", None)
        labels.update({SERVICE_NAME: meta["name"], MANAGED_BY: CONTROLLER})
        wanted = [
            {
                "endpoints": [_endpoint(p, ready) for p, ready in sorted(members, key=_by_name)],
                "ports": [_slice_port(p) for p in ports],
            }
            for ports, members in sorted(groups.items())
        ] or [{"endpoints": [], "ports": []}]
        slices = sorted(slices, key=lambda s: s["metadata"]["name"])
        for body, current in zip(wanted, slices, strict=False):
            new = copy.deepcopy(current)
            new["metadata"]["labels"] = labels
            new.update(body, addressType="IPv4")
            self.store.update(ENDPOINTSLICES, new)
        for current in slices[len(wanted) :]:
            self._delete(ENDPOINTSLICES, current)
        for body in wanted[len(slices) :]:
            suffix = "".join(self._rng.choice(_SUFFIX) for _ in range(5))
            self.store.create(
                ENDPOINTSLICES,
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{meta['name']}-{suffix}",
                        "generateName": f"{meta['name']}-",
                        "namespace": meta["namespace"],
                        "labels": labels,
                        "ownerReferences": [owner_ref(service, "Service", "v1")],
                    },
                    "addressType": "IPv4",
                    **body,
                },
            )

    def _write_endpoints(self, service: Obj, groups: dict[_Ports, list[tuple[Obj, bool]]]) -> None:
        meta = service["metadata"]
        subsets = []
        for ports, members in sorted(groups.items()):
            subset: Obj = {}
            ready = [_address(p) for p, ok in sorted(members, key=_by_name) if ok]
            not_ready = [_address(p) for p, ok in sorted(members, key=_by_name) if not ok]
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            subset["ports"] = [_endpoint_port(p) for p in ports]
            subsets.append(subset)
        labels = dict(meta.get("labels") or {})
        labels["endpointslice.kubernetes.io/skip-mirror"] = "true"
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": labels},
        }
        if subsets:
            body["subsets"] = subsets
        current = self.store.find(ENDPOINTS, meta["namespace"], meta["name"])
        if current is None:
            with contextlib.suppress(ApiError):
                self.store.create(ENDPOINTS, body)
            return
        new = copy.deepcopy(current)
        new["metadata"]["labels"] = labels
        new.pop("subsets", None)
        new.update({k: v for k, v in body.items() if k == "subsets"})
        self.store.update(ENDPOINTS, new)

    def _delete(self, key: ResourceKey, obj: Obj) -> None:
        with contextlib.suppress(ApiError):
            self.store.delete(key, obj["metadata"]["namespace"], obj["metadata"]["name"])


def _by_name(member: tuple[Obj, bool]) -> str:
    return str(member[0]["metadata"]["name"])


def _target(pod: Obj) -> Obj:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}


def _endpoint(pod: Obj, ready: bool) -> Obj:
    endpoint: Obj = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {"ready": ready, "serving": ready, "terminating": False},
        "targetRef": _target(pod),
    }
    if pod["spec"].get("nodeName"):
        endpoint["nodeName"] = pod["spec"]["nodeName"]
    return endpoint


def _address(pod: Obj) -> Obj:
    address: Obj = {"ip": pod["status"]["podIP"], "targetRef": _target(pod)}
    if pod["spec"].get("nodeName"):
        address["nodeName"] = pod["spec"]["nodeName"]
    return address


def _slice_port(port: tuple[str, int, str, str]) -> Obj:
    name, number, protocol, app = port
    out: Obj = {"name": name, "port": number, "protocol": protocol}
    if app:
        out["appProtocol"] = app
    return out


def _endpoint_port(port: tuple[str, int, str, str]) -> Obj:
    out = _slice_port(port)
    if not out["name"]:
        del out["name"]
    return out
