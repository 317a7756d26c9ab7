"""external-dns on the management cluster: the `DNSEndpoint` CRD and the zone it feeds.

A DNSEndpoint (externaldns.k8s.io/v1alpha1) lists `spec.endpoints[]` records (dnsName,
recordType, targets, recordTTL). Like external-dns with the CRD source, the controller
publishes them to a zone after a sync delay and then sets `status.observedGeneration`.
The zone (the DNS provider) lives outside the cluster: resolution keeps working when mgmt
is dark, only updates stop. A record whose DNSEndpoint is deleted disappears.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.controllers.common import CRDS, Timers, write_status
from lab.store import Event, Obj, ObjectStore, ResourceKey

GROUP = "externaldns.k8s.io"
DNSENDPOINTS = ResourceKey(GROUP, "dnsendpoints")
DEFAULT_TTL = 300  # what a provider serves for a record without recordTTL


@dataclass(frozen=True)
class Answer:
    name: str
    record_type: str
    targets: tuple[str, ...]
    ttl: int


def crd() -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"dnsendpoints.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": "DNSEndpoint",
                "listKind": "DNSEndpointList",
                "plural": "dnsendpoints",
                "singular": "dnsendpoint",
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
        "status": {
            "acceptedNames": {"kind": "DNSEndpoint", "plural": "dnsendpoints"},
            "conditions": [
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            ],
            "storedVersions": ["v1alpha1"],
        },
    }


def _answers(obj: Obj) -> list[Answer]:
    out = []
    for endpoint in (obj.get("spec") or {}).get("endpoints") or []:
        name = str(endpoint.get("dnsName") or "").rstrip(".").lower()
        targets = tuple(str(t).rstrip(".").lower() for t in endpoint.get("targets") or [])
        if not name or not targets:
            continue
        ttl = endpoint.get("recordTTL")
        ttl = int(ttl) if isinstance(ttl, int | float) and ttl > 0 else DEFAULT_TTL
        out.append(Answer(name, str(endpoint.get("recordType") or "A"), targets, ttl))
    return out


class ExternalDns:
    """The external-dns controller of mgmt and the zone it writes."""

    def __init__(self, store: ObjectStore, *, sync_delay: float = 0.2) -> None:
        self.store = store
        self.sync_delay = sync_delay
        self.timers = Timers()
        self.zone: dict[str, Answer] = {}
        self._owned: dict[tuple[str, str], list[str]] = {}  # DNSEndpoint -> its names
        self._started = False

    def install(self) -> None:
        """Installs the CRD and starts the controller (idempotent)."""
        if self.store.find(CRDS, "", f"dnsendpoints.{GROUP}") is None:
            self.store.create(CRDS, crd())
        if not self._started:
            self._started = True
            self.store.add_listener(self._on_event)
            for obj in self.store.list(DNSENDPOINTS):
                self.publish(obj["metadata"]["namespace"], obj["metadata"]["name"])

    def stop(self) -> None:
        self.timers.cancel_all()
        if self._started:
            self.store.remove_listener(self._on_event)
            self._started = False

    def _on_event(self, event: Event) -> None:
        if event.key != DNSENDPOINTS:
            return
        meta = event.object["metadata"]
        key = (meta["namespace"], meta["name"])
        observed = (event.object.get("status") or {}).get("observedGeneration")
        if event.type == "DELETED" or observed != meta.get("generation"):
            self.timers.later(key, self.sync_delay, lambda: self.publish(*key))

    def publish(self, namespace: str, name: str) -> None:
        """Syncs one DNSEndpoint to the zone and records the generation published."""
        for old in self._owned.pop((namespace, name), []):
            self.zone.pop(old, None)
        obj = self.store.find(DNSENDPOINTS, namespace, name)
        if obj is None:
            return
        answers = _answers(obj)
        for answer in answers:
            self.zone[answer.name] = answer
        self._owned[(namespace, name)] = [a.name for a in answers]
        status = dict(obj.get("status") or {})
        status["observedGeneration"] = obj["metadata"].get("generation", 1)
        write_status(self.store, DNSENDPOINTS, obj, status)

    def resolve(self, name: str) -> Answer | None:
        return self.zone.get(name.rstrip(".").lower())
