"""What kube-controller-manager does for every namespace of one cluster.

- ServiceAccount controller: a `default` ServiceAccount in each active namespace, put back
  when deleted.
- Root CA publisher: a `kube-root-ca.crt` ConfigMap (key `ca.crt`: the cluster's CA
  bundle) in each active namespace, put back when edited or deleted, rewritten when the
  CA changes.
- Namespace controller: a namespace being deleted (deletionTimestamp set, phase
  Terminating) keeps the `kubernetes` finalizer in `spec.finalizers` while its content
  goes. After `delay` seconds the controller deletes everything in it and reports
  progress in the upstream status conditions (NamespaceContentRemaining,
  NamespaceFinalizersRemaining, ...); once nothing is left it removes its finalizer (as
  `PUT .../finalize` does) and the API server deletes the namespace.
- NamespaceLifecycle admission: nothing new is created in a terminating namespace.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter

from lab.controllers.common import CONFIGMAPS, NAMESPACES, SERVICEACCOUNTS, Timers, set_condition
from lab.store import ApiError, Event, Obj, ObjectStore, ResourceKey

ROOT_CA = "kube-root-ca.crt"
KUBERNETES_FINALIZER = "kubernetes"
_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)


def root_ca_configmap(namespace: str, ca_pem: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOT_CA,
            "namespace": namespace,
            "annotations": {"kubernetes.io/description": _DESCRIPTION},
        },
        "data": {"ca.crt": ca_pem},
    }


def default_service_account(namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": namespace},
    }


def terminating(store: ObjectStore, namespace: str) -> bool:
    ns = store.find(NAMESPACES, "", namespace)
    return ns is not None and bool(ns["metadata"].get("deletionTimestamp"))


class NamespaceController:
    def __init__(
        self, store: ObjectStore, *, ca_pem: str, timers: Timers, delay: float = 0.5
    ) -> None:
        self.store = store
        self.ca_pem = ca_pem
        self.timers = timers
        self.delay = delay
        self._active = False
        self._terminating: set[str] = set()

    def start(self) -> None:
        """Admits, listens, and brings every namespace up to date (catch up after restore)."""
        self._active = True
        self.store.add_validator(self._admit)
        self.store.add_listener(self.on_event)
        for ns in self.store.list(NAMESPACES):
            self._sync(ns["metadata"]["name"])

    def stop(self) -> None:
        self._active = False
        self.timers.cancel_all()

    def set_ca(self, ca_pem: str) -> None:
        """The cluster's CA changed: every namespace's bundle follows."""
        self.ca_pem = ca_pem
        for ns in self.store.list(NAMESPACES):
            self._sync(ns["metadata"]["name"])

    def _admit(self, key: ResourceKey, old: Obj | None, new: Obj) -> None:
        namespace = new["metadata"].get("namespace")
        if old is None and namespace and namespace in self._terminating:
            raise ApiError(
                403,
                "Forbidden",
                f'{key.resource} "{new["metadata"].get("name", "")}" is forbidden: unable to '
                f"create new content in namespace {namespace} because it is being terminated",
                {"kind": key.resource},
            )

    def on_event(self, event: Event) -> None:
        if not self._active:
            return
        meta = event.object["metadata"]
        if event.key == NAMESPACES:
            name = meta["name"]
            if event.type == "DELETED":
                self._terminating.discard(name)
            else:
                self.timers.soon(("ns", name), lambda: self._sync(name))
        elif meta.get("namespace") in self._terminating:
            ns = meta["namespace"]
            if not self.timers.armed(("terminate", ns)):
                self.timers.soon(("ns", ns), lambda: self._sync(ns))
        elif event.type != "ADDED" and (
            (event.key == CONFIGMAPS and meta["name"] == ROOT_CA)
            or (event.key == SERVICEACCOUNTS and meta["name"] == "default")
        ):
            ns = meta["namespace"]
            self.timers.soon(("ns", ns), lambda: self._sync(ns))

    def _sync(self, name: str) -> None:
        ns = self.store.find(NAMESPACES, "", name)
        if ns is None:
            return
        if ns["metadata"].get("deletionTimestamp"):
            if name not in self._terminating:
                self._terminating.add(name)
                self.timers.later(("terminate", name), self.delay, lambda: self._delete(name))
            elif not self.timers.armed(("terminate", name)):
                self._delete(name)
            return
        if self.store.find(SERVICEACCOUNTS, name, "default") is None:
            self.store.create(SERVICEACCOUNTS, default_service_account(name))
        wanted = root_ca_configmap(name, self.ca_pem)
        current = self.store.find(CONFIGMAPS, name, ROOT_CA)
        if current is None:
            self.store.create(CONFIGMAPS, wanted)
        elif current.get("data") != wanted["data"] or current.get("binaryData"):
            fixed = copy.deepcopy(current)
            fixed["data"] = wanted["data"]
            fixed.pop("binaryData", None)
            fixed["metadata"].setdefault("annotations", {}).update(
                wanted["metadata"]["annotations"]
            )
            self.store.update(CONFIGMAPS, fixed)

    def _delete(self, name: str) -> None:
        """One pass of the namespace deleter: delete content, report, finalize when empty."""
        ns = self.store.find(NAMESPACES, "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for key, obj in self._content(name):
            if not obj["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(ApiError):
                    self.store.delete(key, name, obj["metadata"]["name"])
        remaining = self._content(name)
        counts = Counter(key for key, _ in remaining)
        finalizers = Counter(
            f for _, obj in remaining for f in obj["metadata"].get("finalizers", [])
        )
        ns = copy.deepcopy(self.store.get(NAMESPACES, "", name))
        status = ns.setdefault("status", {})
        status["phase"] = "Terminating"
        conditions = status.setdefault("conditions", [])
        set_condition(
            conditions,
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered",
        )
        set_condition(
            conditions,
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        )
        set_condition(
            conditions,
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        )
        if counts:
            listed = ", ".join(
                f"{k.resource}.{k.group} has {n} resource instances"
                for k, n in sorted(counts.items())
            )
            set_condition(
                conditions,
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                f"Some resources are remaining: {listed}",
            )
        else:
            set_condition(
                conditions,
                "NamespaceContentRemaining",
                "False",
                "ContentRemoved",
                "All content successfully removed",
            )
        if finalizers:
            listed = ", ".join(
                f"{f} in {n} resource instances" for f, n in sorted(finalizers.items())
            )
            set_condition(
                conditions,
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                f"Some content in the namespace has finalizers remaining: {listed}",
            )
        else:
            set_condition(
                conditions,
                "NamespaceFinalizersRemaining",
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished",
            )
        ns = self.store.update(NAMESPACES, ns, subresource="status")
        if remaining:
            return  # content changes bring the next pass
        finalized = copy.deepcopy(ns)
        finalized["spec"]["finalizers"] = [
            f for f in ns["spec"].get("finalizers", []) if f != KUBERNETES_FINALIZER
        ]
        self.store.update(NAMESPACES, finalized)

    def _content(self, name: str) -> list[tuple[ResourceKey, Obj]]:
        return [
            (key, obj)
            for key in list(self.store.keys())
            if key != NAMESPACES
            for obj in self.store.list(key, name)
        ]
