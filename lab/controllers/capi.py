"""Cluster API on the management cluster: CRDs, per-cluster objects, upgrades, admission.

For each workload cluster `<c>`, namespace `fleet` of mgmt holds a Cluster `<c>`, a
KubeadmControlPlane `<c>-control-plane` and a MachineDeployment `<c>-md-0`. Setting the
KCP's spec.version upgrades the control plane after `upgrade_seconds` (the workload's
kubeadm-config, hence `/version`, its control-plane node and kube-proxy follow; KCP
status.version and observedGeneration catch up then). Setting the MachineDeployment's
spec.template.spec.version rolls the workers one at a time, `upgrade_seconds` each
(cordoned while rolling). With the upgrade-fail fault, the upgrade in flight stops at its
next step with Ready=False (severity Error) and resumes once the fault is cleared.

Each cluster has one control-plane Machine `<c>-control-plane-<5 chars>` owned by the KCP,
whose `machine.cluster.x-k8s.io/certificates-expiry` annotation and
`status.certificatesExpiryDate` give its serving certificate's notAfter (a value written
into the annotation by a client wins, as in CAPI). A KCP rollout replaces that Machine:
a version change, `spec.rolloutAfter` passing the Machine's creationTimestamp, or
`spec.rolloutBefore.certificatesExpiryDays` reaching its expiry date. Replacing it renews
the cluster's serving certificate from the signing CA of the `<c>-ca` Secret (tls.key
picks it out of tls.crt, whose certificates become the cluster's trust bundle), through
`ServingCerts`; a `<c>-ca` that cannot sign holds the rollout with
CertificatesAvailable=False.

Admission mirrors the CAPI webhooks: a version must be semver, may not go down, may not
skip a minor, and a MachineDeployment may not run ahead of its control plane;
rolloutBefore.certificatesExpiryDays must be at least 7.
"""

from __future__ import annotations

import base64
import copy
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from lab.controllers.common import (
    CONFIGMAPS,
    CRDS,
    DAEMONSETS,
    NAMESPACES,
    NODES,
    Timers,
    is_control_plane,
    node_ready,
    owner_ref,
    safe_hash,
    set_condition,
    write_status,
)
from lab.controllers.nodes import set_kubelet_version, set_unschedulable, workers
from lab.pki import KeyPair, signer_of
from lab.store import ApiError, Event, Obj, ObjectStore, ResourceKey, now_iso

NAMESPACE = "fleet"
CLUSTERS = ResourceKey("cluster.x-k8s.io", "clusters")
MACHINEDEPLOYMENTS = ResourceKey("cluster.x-k8s.io", "machinedeployments")
KUBEADMCONTROLPLANES = ResourceKey("controlplane.cluster.x-k8s.io", "kubeadmcontrolplanes")
MACHINES = ResourceKey("cluster.x-k8s.io", "machines")
SECRETS = ResourceKey("", "secrets")
CLUSTER_NAME_LABEL = "cluster.x-k8s.io/cluster-name"
CONTROL_PLANE_LABEL = "cluster.x-k8s.io/control-plane"
CERTIFICATES_EXPIRY = "machine.cluster.x-k8s.io/certificates-expiry"
SECRET_TYPE = "cluster.x-k8s.io/secret"
_CERTS_FAILED = "CertificatesGenerationFailed"

_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")
_FAILED = "NodeStartupTimeout"

StoreLookup = Callable[[str], ObjectStore | None]


class ServingCerts(Protocol):
    """The workload clusters' serving certificates, as the lab runtime keeps them."""

    def expiry(self, cluster: str) -> datetime | None:
        """The notAfter of the cluster's current serving certificate."""

    def renew(self, cluster: str, signer: KeyPair, trust_pem: bytes) -> datetime:
        """A new serving certificate from `signer`, `trust_pem` the new trust bundle;
        returns its notAfter."""


def parse_version(version: str) -> tuple[int, int, int] | None:
    match = _SEMVER.match(version or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


# ---- CRDs ------------------------------------------------------------------------------


def _crd(group: str, kind: str, plural: str, short: list[str], columns: list[Obj]) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"cluster.x-k8s.io/provider": "cluster-api"},
        },
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["cluster-api"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
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
            "acceptedNames": {"kind": kind, "plural": plural},
            "conditions": [
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            ],
            "storedVersions": ["v1beta1"],
        },
    }


def _col(name: str, path: str, type_: str = "string") -> Obj:
    return {"name": name, "type": type_, "jsonPath": path}


def crds() -> list[Obj]:
    age = _col("Age", ".metadata.creationTimestamp", "date")
    return [
        _crd(
            "cluster.x-k8s.io",
            "Cluster",
            "clusters",
            ["cl"],
            [_col("Phase", ".status.phase"), age, _col("Version", ".spec.topology.version")],
        ),
        _crd(
            "controlplane.cluster.x-k8s.io",
            "KubeadmControlPlane",
            "kubeadmcontrolplanes",
            ["kcp"],
            [
                _col("Cluster", ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']"),
                _col("Initialized", ".status.initialized", "boolean"),
                _col("Replicas", ".status.replicas", "integer"),
                _col("Ready", ".status.readyReplicas", "integer"),
                _col("Updated", ".status.updatedReplicas", "integer"),
                age,
                _col("Version", ".spec.version"),
            ],
        ),
        _crd(
            "cluster.x-k8s.io",
            "Machine",
            "machines",
            ["ma"],
            [
                _col("Cluster", ".spec.clusterName"),
                _col("NodeName", ".status.nodeRef.name"),
                _col("ProviderID", ".spec.providerID"),
                _col("Phase", ".status.phase"),
                age,
                _col("Version", ".spec.version"),
            ],
        ),
        _crd(
            "cluster.x-k8s.io",
            "MachineDeployment",
            "machinedeployments",
            ["md"],
            [
                _col("Cluster", ".spec.clusterName"),
                _col("Replicas", ".status.replicas", "integer"),
                _col("Ready", ".status.readyReplicas", "integer"),
                _col("Updated", ".status.updatedReplicas", "integer"),
                _col("Phase", ".status.phase"),
                age,
                _col("Version", ".spec.template.spec.version"),
            ],
        ),
    ]


# ---- admission -------------------------------------------------------------------------


def _denied(webhook: str, kind: str, group: str, name: str, field: str, detail: str) -> ApiError:
    message = (
        f'admission webhook "validation.{webhook}" denied the request: '
        f'{kind}.{group} "{name}" is invalid: {field}: {detail}'
    )
    return ApiError(
        422,
        "Invalid",
        message,
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {
                    "reason": "FieldValueForbidden"
                    if detail.startswith("Forbidden")
                    else "FieldValueInvalid",
                    "message": detail,
                    "field": field,
                }
            ],
        },
    )


def _check_step(old: str | None, new: str) -> str | None:
    """Why moving from `old` to `new` is refused, or None when allowed."""
    parsed = parse_version(new)
    if parsed is None:
        return f'Invalid value: "{new}": must be a valid semantic version'
    before = parse_version(old or "")
    if before is None or parsed == before:
        return None
    if parsed < before:
        return (
            f"Forbidden: cannot update Kubernetes version from {old} to {new}: "
            "downgrades are not supported"
        )
    if parsed[:2] > (before[0], before[1] + 1):
        return (
            f"Forbidden: cannot update Kubernetes version from {old} to {new}: "
            "skipping minor versions is not supported"
        )
    return None


class CapiController:
    """Cluster API objects and upgrades for every workload cluster, on the mgmt store."""

    def __init__(
        self,
        mgmt: ObjectStore,
        *,
        workload: StoreLookup,
        upgrade_seconds: float = 2.0,
        certs: ServingCerts | None = None,
    ) -> None:
        self.mgmt = mgmt
        self.workload = workload
        self.upgrade_seconds = upgrade_seconds
        self.certs = certs  # None: no certificates (bare simulations in tests)
        self.timers = Timers()
        self.failing: set[str] = set()  # clusters with the upgrade-fail fault
        self._machine_names: dict[str, set[str]] = {}  # control-plane Machines by cluster

    def start(self) -> None:
        """Installs CRDs, the fleet namespace and the webhooks; reconciles what exists."""
        for crd in crds():
            if self.mgmt.find(CRDS, "", crd["metadata"]["name"]) is None:
                self.mgmt.create(CRDS, crd)
        if self.mgmt.find(NAMESPACES, "", NAMESPACE) is None:
            self.mgmt.create(
                NAMESPACES,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": NAMESPACE},
                    "status": {"phase": "Active"},
                },
            )
        self.mgmt.add_validator(self.admit)
        self.mgmt.add_listener(self.on_event)
        for machine in self.mgmt.list(MACHINES, NAMESPACE):
            self._index(machine, present=True)
        for kcp in self.mgmt.list(KUBEADMCONTROLPLANES, NAMESPACE):
            self.queue(kcp["metadata"]["labels"][CLUSTER_NAME_LABEL])

    def stop(self) -> None:
        self.timers.cancel_all()

    # ---- objects -----------------------------------------------------------------------

    def register(
        self, *, name: str, version: str, nodes: int, labels: dict[str, str] | None = None
    ) -> None:
        """Creates the cluster's CAPI objects, already provisioned (no-op when present)."""
        if self.mgmt.find(CLUSTERS, NAMESPACE, name) is not None:
            return
        workers_count = max(nodes - 1, 0)
        for key, obj in _objects(name=name, version=version, nodes=nodes, labels=labels or {}):
            status = obj.pop("status")
            created = self.mgmt.create(key, obj)
            if key == KUBEADMCONTROLPLANES:
                status.update(_kcp_status(created, "settled"))
                self._create_machine(name, created, version)
            elif key == MACHINEDEPLOYMENTS:
                status = _md_status(
                    created, total=workers_count, updated=workers_count, ready=workers_count
                )
            write_status(self.mgmt, key, created, status)

    def unregister(self, name: str) -> None:
        for key, obj_name in (
            *((MACHINES, m["metadata"]["name"]) for m in self._machines(name)),
            (MACHINEDEPLOYMENTS, f"{name}-md-0"),
            (KUBEADMCONTROLPLANES, f"{name}-control-plane"),
            (CLUSTERS, name),
            (SECRETS, f"{name}-ca"),
            (SECRETS, f"{name}-kubeconfig"),
        ):
            if self.mgmt.find(key, NAMESPACE, obj_name) is not None:
                self.mgmt.delete(key, NAMESPACE, obj_name)
        for prefix in ("kcp", "md", "due"):
            self.timers.cancel((prefix, name))
        self.failing.discard(name)

    def set_upgrade_fail(self, name: str, failing: bool) -> None:
        if failing:
            self.failing.add(name)
        else:
            self.failing.discard(name)
        self.queue(name)

    # ---- admission ---------------------------------------------------------------------

    def admit(self, key: ResourceKey, old: Obj | None, new: Obj) -> None:
        name = new["metadata"]["name"]
        if key == KUBEADMCONTROLPLANES:
            before = old["spec"].get("version") if old else None
            why = _check_step(before, new["spec"].get("version", ""))
            days = new["spec"].get("rolloutBefore", {}).get("certificatesExpiryDays")
            if why is None and days is not None and (not isinstance(days, int) or days < 7):
                raise _denied(
                    "kubeadmcontrolplane.controlplane.cluster.x-k8s.io",
                    "KubeadmControlPlane",
                    "controlplane.cluster.x-k8s.io",
                    name,
                    "spec.rolloutBefore.certificatesExpiryDays",
                    f"Invalid value: {days!r}: must be greater than or equal to 7",
                )
            if why:
                raise _denied(
                    "kubeadmcontrolplane.controlplane.cluster.x-k8s.io",
                    "KubeadmControlPlane",
                    "controlplane.cluster.x-k8s.io",
                    name,
                    "spec.version",
                    why,
                )
        elif key == MACHINEDEPLOYMENTS:
            version = _md_version(new) or ""
            before = _md_version(old) if old else None
            why = _check_step(before, version)
            if why is None and version != before:
                why = self._ahead_of_control_plane(new, version)
            if why:
                raise _denied(
                    "machinedeployment.cluster.x-k8s.io",
                    "MachineDeployment",
                    "cluster.x-k8s.io",
                    name,
                    "spec.template.spec.version",
                    why,
                )

    def _ahead_of_control_plane(self, md: Obj, version: str) -> str | None:
        cluster = md["spec"].get("clusterName", "")
        kcp = self.mgmt.find(
            KUBEADMCONTROLPLANES, md["metadata"]["namespace"], f"{cluster}-control-plane"
        )
        if kcp is None:
            return None
        running = kcp.get("status", {}).get("version") or kcp["spec"]["version"]
        mine, theirs = parse_version(version), parse_version(running)
        if mine and theirs and mine > theirs:
            return (
                f"Forbidden: version {version} is newer than the control plane version "
                f"{running} of cluster {cluster}: upgrade the control plane first"
            )
        return None

    # ---- reconcile ---------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if event.key == MACHINES:
            self._index(event.object, present=event.type != "DELETED")
        watched = (KUBEADMCONTROLPLANES, MACHINEDEPLOYMENTS, MACHINES, SECRETS)
        if event.key in watched and event.type != "DELETED":
            cluster = event.object["metadata"].get("labels", {}).get(CLUSTER_NAME_LABEL)
            if cluster and event.object["metadata"].get("namespace") == NAMESPACE:
                if event.key == MACHINES:
                    self._sync_machine_expiry(event.object)
                else:
                    self.queue(cluster)

    def queue(self, cluster: str) -> None:
        """Reconciles the cluster's control plane and workers on the next loop turn."""
        self.timers.soon(("sync", cluster), lambda: self.reconcile(cluster))

    def reconcile(self, cluster: str) -> None:
        self._reconcile_kcp(cluster)
        self._reconcile_md(cluster)

    def _reconcile_kcp(self, cluster: str) -> None:
        kcp = self.mgmt.find(KUBEADMCONTROLPLANES, NAMESPACE, f"{cluster}-control-plane")
        if kcp is None:
            return
        target, current = kcp["spec"]["version"], kcp.get("status", {}).get("version")
        machines = self._machines(cluster)
        if not machines:  # restored from a state file written before Machines existed
            self._create_machine(cluster, kcp, current or target)
            machines = self._machines(cluster)
        due, wake = _rollout_due(kcp, machines, datetime.now(UTC))
        self.timers.cancel(("due", cluster))
        if wake is not None:
            delay = (wake - datetime.now(UTC)).total_seconds() + 0.01
            self.timers.later(("due", cluster), max(delay, 0.0), lambda: self.queue(cluster))
        if target == current and not due:
            if not self.timers.armed(("kcp", cluster)):
                write_status(self.mgmt, KUBEADMCONTROLPLANES, kcp, _kcp_status(kcp, "settled"))
            return
        failed = _reason(kcp, "Ready") == _FAILED
        if failed and cluster in self.failing:
            return
        try:
            self._signing_ca(cluster)
        except ValueError as exc:
            self.timers.cancel(("kcp", cluster))
            write_status(
                self.mgmt, KUBEADMCONTROLPLANES, kcp, _kcp_status(kcp, "certs-failed", str(exc))
            )
            return
        write_status(self.mgmt, KUBEADMCONTROLPLANES, kcp, _kcp_status(kcp, "rolling"))
        if not self.timers.armed(("kcp", cluster)):
            self.timers.later(
                ("kcp", cluster), self.upgrade_seconds, lambda: self._finish_kcp(cluster, target)
            )

    def _finish_kcp(self, cluster: str, target: str) -> None:
        kcp = self.mgmt.find(KUBEADMCONTROLPLANES, NAMESPACE, f"{cluster}-control-plane")
        if kcp is None:
            return
        if kcp["spec"]["version"] != target:  # retargeted meanwhile: start over
            self.queue(cluster)
            return
        if cluster in self.failing:
            write_status(self.mgmt, KUBEADMCONTROLPLANES, kcp, _kcp_status(kcp, "failed"))
            return
        try:
            signer, trust = self._signing_ca(cluster)
        except ValueError:
            self.queue(cluster)  # the Secret changed meanwhile: reconcile reports it
            return
        store = self.workload(cluster)
        if store is not None and kcp.get("status", {}).get("version") != target:
            _upgrade_control_plane(store, cluster, target)
        not_after = None
        if self.certs is not None and signer is not None:
            not_after = self.certs.renew(cluster, signer, trust)
        for old in self._machines(cluster):
            self.mgmt.delete(MACHINES, NAMESPACE, old["metadata"]["name"])
        self._create_machine(cluster, kcp, target, not_after)
        kcp = self.mgmt.get(KUBEADMCONTROLPLANES, NAMESPACE, f"{cluster}-control-plane")
        status = _kcp_status(kcp, "settled")
        status["version"] = target
        write_status(self.mgmt, KUBEADMCONTROLPLANES, kcp, status)
        self.queue(cluster)  # a rolloutBefore already due again, or a new rolloutAfter

    # ---- machines and the cluster CA -----------------------------------------------------

    def _index(self, machine: Obj, *, present: bool) -> None:
        meta = machine["metadata"]
        labels = meta.get("labels", {})
        cluster = labels.get(CLUSTER_NAME_LABEL)
        if (
            cluster is None
            or CONTROL_PLANE_LABEL not in labels
            or meta.get("namespace") != NAMESPACE
        ):
            return
        names = self._machine_names.setdefault(cluster, set())
        if present:
            names.add(meta["name"])
        else:
            names.discard(meta["name"])

    def _machines(self, cluster: str) -> list[Obj]:
        """The cluster's control-plane Machines (an index: mgmt holds one per cluster)."""
        found = (
            self.mgmt.find(MACHINES, NAMESPACE, n)
            for n in sorted(self._machine_names.get(cluster, ()))
        )
        return [m for m in found if m is not None]

    def _create_machine(
        self, cluster: str, kcp: Obj, version: str, not_after: datetime | None = None
    ) -> None:
        if not_after is None and self.certs is not None:
            not_after = self.certs.expiry(cluster)
        machine = _machine(cluster, kcp, version, not_after)
        machine["status"] = _machine_status(machine, cluster)  # created provisioned, as seeds are
        self.mgmt.create(MACHINES, machine)

    def _sync_machine_expiry(self, machine: Obj) -> None:
        """status.certificatesExpiryDate follows the annotation (CAPI's machine controller)."""
        value = machine["metadata"].get("annotations", {}).get(CERTIFICATES_EXPIRY)
        status = copy.deepcopy(machine.get("status", {}))
        if value and _parse_time(value) is not None:
            status["certificatesExpiryDate"] = value
        if status != machine.get("status", {}):
            write_status(self.mgmt, MACHINES, machine, status)
        cluster = machine["metadata"]["labels"][CLUSTER_NAME_LABEL]
        self.queue(cluster)  # rolloutBefore may be due now

    def _signing_ca(self, cluster: str) -> tuple[KeyPair | None, bytes]:
        """The signing CA and trust bundle of `<cluster>-ca`; ValueError when it cannot
        sign. (None, b"") without certificates."""
        if self.certs is None:
            return None, b""
        secret = self.mgmt.find(SECRETS, NAMESPACE, f"{cluster}-ca")
        if secret is None:
            raise ValueError(f'secrets "{cluster}-ca" not found')
        data = secret.get("data", {})
        try:
            bundle = base64.b64decode(data.get("tls.crt", ""), validate=True)
            key = base64.b64decode(data.get("tls.key", ""), validate=True)
        except ValueError:
            raise ValueError(f"secret {cluster}-ca: tls.crt and tls.key must be base64") from None
        try:
            return signer_of(bundle, key), bundle
        except ValueError as exc:
            raise ValueError(f"secret {cluster}-ca: {exc}") from None

    def _reconcile_md(self, cluster: str) -> None:
        md = self.mgmt.find(MACHINEDEPLOYMENTS, NAMESPACE, f"{cluster}-md-0")
        store = self.workload(cluster)
        if md is None or store is None:
            return
        target = md["spec"]["template"]["spec"]["version"]
        pool = workers(store)
        outdated = [n for n in pool if n["status"]["nodeInfo"]["kubeletVersion"] != target]
        failed = _reason(md, "Ready") == _FAILED and cluster in self.failing
        if outdated and not failed and not self.timers.armed(("md", cluster)):
            node = outdated[0]["metadata"]["name"]
            set_unschedulable(store, node, True)
            self.timers.later(
                ("md", cluster), self.upgrade_seconds, lambda: self._roll_node(cluster, node)
            )
        elif not outdated:
            self.timers.cancel(("md", cluster))
        md = self.mgmt.get(MACHINEDEPLOYMENTS, NAMESPACE, f"{cluster}-md-0")
        write_status(self.mgmt, MACHINEDEPLOYMENTS, md, _observed_md_status(md, store, failed))

    def _roll_node(self, cluster: str, node: str) -> None:
        md = self.mgmt.find(MACHINEDEPLOYMENTS, NAMESPACE, f"{cluster}-md-0")
        store = self.workload(cluster)
        if md is None or store is None:
            return
        if cluster in self.failing:
            write_status(self.mgmt, MACHINEDEPLOYMENTS, md, _observed_md_status(md, store, True))
            return
        set_kubelet_version(store, node, md["spec"]["template"]["spec"]["version"])
        set_unschedulable(store, node, False)
        self.queue(cluster)


def _md_version(md: Obj) -> str | None:
    return md.get("spec", {}).get("template", {}).get("spec", {}).get("version")


def _reason(obj: Obj, type_: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return cond.get("reason")
    return None


def _upgrade_control_plane(store: ObjectStore, cluster: str, version: str) -> None:
    """What `kubeadm upgrade apply` leaves behind in the workload cluster."""
    from lab.seed import cluster_configuration, kube_proxy_image

    config = store.find(CONFIGMAPS, "kube-system", "kubeadm-config")
    if config is not None:
        config = copy.deepcopy(config)
        config["data"]["ClusterConfiguration"] = cluster_configuration(
            name=cluster, version=version
        )
        store.update(CONFIGMAPS, config)
    for node in store.list(NODES):
        if is_control_plane(node):
            set_kubelet_version(store, node["metadata"]["name"], version)
    proxy = store.find(DAEMONSETS, "kube-system", "kube-proxy")
    if proxy is not None:
        proxy = copy.deepcopy(proxy)
        for container in proxy["spec"]["template"]["spec"]["containers"]:
            if container["name"] == "kube-proxy":
                container["image"] = kube_proxy_image(version)
        store.update(DAEMONSETS, proxy)


# ---- status shapes (CAPI v1beta1) ------------------------------------------------------


def _kcp_status(kcp: Obj, phase: str, message: str = "") -> Obj:
    """`settled`: all True; `rolling`: a surge machine is joining; `failed`: it never will;
    `certs-failed`: a rollout is due but the cluster CA cannot sign (`message` says why)."""
    status = copy.deepcopy(kcp.get("status", {}))
    conditions = status.setdefault("conditions", [])
    ok = phase in ("settled", "certs-failed")
    name = kcp["metadata"]["name"]
    for type_ in (
        "Available",
        "CertificatesAvailable",
        "ControlPlaneComponentsHealthy",
        "EtcdClusterHealthy",
        "MachinesCreated",
    ):
        set_condition(conditions, type_, "True")
    if ok:
        for type_ in ("MachinesReady", "MachinesSpecUpToDate", "Resized", "Ready"):
            set_condition(conditions, type_, "True")
        status.update(replicas=1, updatedReplicas=1, readyReplicas=1, unavailableReplicas=0)
        status["observedGeneration"] = kcp["metadata"]["generation"]
    else:
        rolling = "Rolling 1 replicas with outdated spec (0 replicas up to date)"
        set_condition(
            conditions,
            "MachinesSpecUpToDate",
            "False",
            "RollingUpdateInProgress",
            rolling,
            extra={"severity": "Warning"},
        )
        set_condition(
            conditions,
            "Resized",
            "False",
            "ScalingDown",
            "Scaling down control plane to 1 replicas (actual 2)",
            extra={"severity": "Warning"},
        )
        if phase == "failed":
            failure = (
                f"Machine {name}-{kcp['spec']['version'].replace('.', '-')} failed to join "
                f"the cluster: node startup timeout while upgrading to {kcp['spec']['version']}"
            )
            for type_ in ("MachinesReady", "Ready"):
                set_condition(
                    conditions, type_, "False", _FAILED, failure, extra={"severity": "Error"}
                )
        else:
            set_condition(conditions, "MachinesReady", "True")
            set_condition(
                conditions,
                "Ready",
                "False",
                "RollingUpdateInProgress",
                rolling,
                extra={"severity": "Warning"},
            )
        status.update(replicas=2, updatedReplicas=1, readyReplicas=1, unavailableReplicas=1)
    if phase == "certs-failed":
        for type_ in ("CertificatesAvailable", "Ready"):
            set_condition(
                conditions, type_, "False", _CERTS_FAILED, message, extra={"severity": "Error"}
            )
    for cond in conditions:
        if cond["status"] == "True":
            for k in ("severity", "reason", "message"):
                cond.pop(k, None)
    status.update(ready=True, initialized=True)
    conditions.sort(key=lambda c: (c["type"] != "Ready", c["type"]))
    return status


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rollout_due(kcp: Obj, machines: list[Obj], now: datetime) -> tuple[bool, datetime | None]:
    """Whether a control-plane Machine must be replaced now (KCP's rolloutAfter and
    rolloutBefore.certificatesExpiryDays rules), else when to look again (or None)."""
    spec = kcp["spec"]
    after = _parse_time(spec.get("rolloutAfter"))
    days = spec.get("rolloutBefore", {}).get("certificatesExpiryDays")
    due, wakes = False, []
    for machine in machines:
        created = _parse_time(machine["metadata"].get("creationTimestamp"))
        if after is not None and created is not None and created < after:
            if after <= now:
                due = True
            wakes.append(after)
        expiry = _parse_time(machine.get("status", {}).get("certificatesExpiryDate"))
        if isinstance(days, int) and expiry is not None:
            threshold = expiry - timedelta(days=days)
            if threshold <= now:
                due = True
            wakes.append(threshold)
    later = [w for w in wakes if w > now]
    return due, None if due or not later else min(later)


def _machine(cluster: str, kcp: Obj, version: str, not_after: datetime | None) -> Obj:
    """A control-plane Machine of `kcp` (v1beta1), named like KCP names them."""
    kcp_name = kcp["metadata"]["name"]
    name = f"{kcp_name}-{safe_hash(uuid.uuid4().hex, 5)}"
    annotations = {CERTIFICATES_EXPIRY: _rfc3339(not_after)} if not_after else {}
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                CLUSTER_NAME_LABEL: cluster,
                CONTROL_PLANE_LABEL: "",
                "cluster.x-k8s.io/control-plane-name": kcp_name,
            },
            "annotations": annotations,
            "ownerReferences": [
                owner_ref(kcp, "KubeadmControlPlane", "controlplane.cluster.x-k8s.io/v1beta1")
            ],
        },
        "spec": {
            "clusterName": cluster,
            "version": version,
            "bootstrap": {
                "configRef": {
                    "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1",
                    "kind": "KubeadmConfig",
                    "name": name,
                    "namespace": NAMESPACE,
                },
                "dataSecretName": name,
            },
            "infrastructureRef": {
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                "kind": "LabMachine",
                "name": name,
                "namespace": NAMESPACE,
            },
            "providerID": f"lab://{cluster}/{cluster}-cp-0",
            "nodeDeletionTimeout": "10s",
        },
    }


def _machine_status(machine: Obj, cluster: str) -> Obj:
    now = now_iso()
    status: Obj = {
        "phase": "Running",
        "bootstrapReady": True,
        "infrastructureReady": True,
        "nodeRef": {"apiVersion": "v1", "kind": "Node", "name": f"{cluster}-cp-0"},
        "addresses": [{"type": "InternalIP", "address": "10.0.0.10"}],
        "lastUpdated": now,
        "observedGeneration": 1,
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("Ready", "BootstrapReady", "InfrastructureReady", "NodeHealthy")
        ],
    }
    expiry = machine["metadata"].get("annotations", {}).get(CERTIFICATES_EXPIRY)
    if expiry:
        status["certificatesExpiryDate"] = expiry
    return status


def annotate_expiry(mgmt: ObjectStore, cluster: str, not_after: datetime) -> None:
    """Sets the control-plane Machines' certificates-expiry annotation (what CABPK does
    after `kubeadm certs renew`); the status follows through the controller."""
    for machine in mgmt.list(MACHINES, NAMESPACE):
        labels = machine["metadata"].get("labels", {})
        if labels.get(CLUSTER_NAME_LABEL) == cluster and CONTROL_PLANE_LABEL in labels:
            new = copy.deepcopy(machine)
            new["metadata"].setdefault("annotations", {})[CERTIFICATES_EXPIRY] = _rfc3339(not_after)
            mgmt.update(MACHINES, new)


def ca_secret(cluster: str, bundle_pem: bytes, key_pem: bytes) -> Obj:
    """`<cluster>-ca`: the cluster CA as Cluster API keeps it in the management cluster."""
    return _secret(
        f"{cluster}-ca",
        cluster,
        {
            "tls.crt": base64.b64encode(bundle_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    )


def kubeconfig_secret(cluster: str, kubeconfig: str) -> Obj:
    """`<cluster>-kubeconfig`: the admin kubeconfig KCP keeps for the cluster."""
    return _secret(
        f"{cluster}-kubeconfig", cluster, {"value": base64.b64encode(kubeconfig.encode()).decode()}
    )


def _secret(name: str, cluster: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {CLUSTER_NAME_LABEL: cluster},
        },
        "data": data,
    }


def _observed_md_status(md: Obj, store: ObjectStore, failed: bool) -> Obj:
    """The MachineDeployment's status as the workload cluster's workers show it."""
    target = md["spec"]["template"]["spec"]["version"]
    pool = workers(store)
    return _md_status(
        md,
        total=len(pool),
        updated=sum(n["status"]["nodeInfo"]["kubeletVersion"] == target for n in pool),
        ready=sum(node_ready(n) for n in pool),
        failed=failed,
    )


def _md_status(md: Obj, *, total: int, updated: int, ready: int, failed: bool = False) -> Obj:
    target = md["spec"]["template"]["spec"]["version"]
    desired = int(md["spec"].get("replicas", total))
    status = copy.deepcopy(md.get("status", {}))
    status.update(
        replicas=total,
        updatedReplicas=updated,
        readyReplicas=ready,
        availableReplicas=ready,
        unavailableReplicas=max(0, desired - ready),
        phase="Running" if updated == desired and ready == desired else "ScalingUp",
        observedGeneration=md["metadata"]["generation"],
        selector=f"{CLUSTER_NAME_LABEL}={md['spec']['clusterName']},"
        f"cluster.x-k8s.io/deployment-name={md['metadata']['name']}",
    )
    conditions = status.setdefault("conditions", [])
    if ready >= desired:
        set_condition(conditions, "Available", "True")
    else:
        set_condition(
            conditions,
            "Available",
            "False",
            "WaitingForAvailableMachines",
            f"Minimum availability requires {desired} replicas, current {ready} available",
            extra={"severity": "Warning"},
        )
    if failed:
        message = f"node failed to join the cluster while rolling to {target}: node startup timeout"
        for type_ in ("MachineSetReady", "Ready"):
            set_condition(conditions, type_, "False", _FAILED, message, extra={"severity": "Error"})
    else:
        for type_ in ("MachineSetReady", "Ready"):
            set_condition(conditions, type_, "True")
    for cond in conditions:
        if cond["status"] == "True":
            for k in ("severity", "reason", "message"):
                cond.pop(k, None)
    conditions.sort(key=lambda c: (c["type"] != "Ready", c["type"]))
    return status


def _objects(
    *, name: str, version: str, nodes: int, labels: dict[str, str]
) -> list[tuple[ResourceKey, Obj]]:
    """The Cluster, KubeadmControlPlane and MachineDeployment of a provisioned cluster."""
    owned = {CLUSTER_NAME_LABEL: name}
    kcp_name, md_name = f"{name}-control-plane", f"{name}-md-0"
    workers_count = max(nodes - 1, 0)
    cluster: Obj = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {**labels, **owned}},
        "spec": {
            "clusterNetwork": {"pods": {"cidrBlocks": ["10.244.0.0/16"]}},
            "controlPlaneRef": {
                "apiVersion": "controlplane.cluster.x-k8s.io/v1beta1",
                "kind": "KubeadmControlPlane",
                "name": kcp_name,
                "namespace": NAMESPACE,
            },
            "infrastructureRef": {
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                "kind": "LabCluster",
                "name": name,
                "namespace": NAMESPACE,
            },
        },
        "status": {
            "phase": "Provisioned",
            "controlPlaneReady": True,
            "infrastructureReady": True,
            "observedGeneration": 1,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now_iso()}
                for t in (
                    "Ready",
                    "ControlPlaneInitialized",
                    "ControlPlaneReady",
                    "InfrastructureReady",
                )
            ],
        },
    }
    kcp: Obj = {
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta1",
        "kind": "KubeadmControlPlane",
        "metadata": {"name": kcp_name, "namespace": NAMESPACE, "labels": dict(owned)},
        "spec": {
            "version": version,
            "replicas": 1,
            "machineTemplate": {
                "infrastructureRef": {
                    "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                    "kind": "LabMachineTemplate",
                    "name": f"{kcp_name}-template",
                    "namespace": NAMESPACE,
                }
            },
            "kubeadmConfigSpec": {"clusterConfiguration": {"clusterName": name}},
            "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        },
        "status": {
            "version": version,
            "observedGeneration": 1,
            "selector": f"{CLUSTER_NAME_LABEL}={name},cluster.x-k8s.io/control-plane",
        },
    }
    md: Obj = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "MachineDeployment",
        "metadata": {"name": md_name, "namespace": NAMESPACE, "labels": dict(owned)},
        "spec": {
            "clusterName": name,
            "replicas": workers_count,
            "selector": {"matchLabels": {**owned, "cluster.x-k8s.io/deployment-name": md_name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": {**owned, "cluster.x-k8s.io/deployment-name": md_name}},
                "spec": {
                    "clusterName": name,
                    "version": version,
                    "bootstrap": {
                        "configRef": {
                            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1",
                            "kind": "KubeadmConfigTemplate",
                            "name": f"{md_name}-bootstrap",
                            "namespace": NAMESPACE,
                        }
                    },
                    "infrastructureRef": {
                        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                        "kind": "LabMachineTemplate",
                        "name": f"{md_name}-template",
                        "namespace": NAMESPACE,
                    },
                },
            },
        },
        "status": {},
    }
    return [(CLUSTERS, cluster), (KUBEADMCONTROLPLANES, kcp), (MACHINEDEPLOYMENTS, md)]
