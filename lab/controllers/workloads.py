"""Deployments, ReplicaSets, DaemonSets and Pods of one simulated cluster.

A Deployment owns one ReplicaSet per pod template (named `<deployment>-<template hash>`,
pods labelled `pod-template-hash`), and rolls from old to new with the RollingUpdate
budget (maxSurge / maxUnavailable, Kubernetes defaults 25%) or Recreate. A DaemonSet keeps
one pod per node and replaces them `maxUnavailable` at a time. Pods start `rollout_delay`
seconds after creation, once their images are pulled (lab/controllers/images.py): a pod
whose image is unparseable or missing never starts (InvalidImageName, or ErrImagePull then
ImagePullBackOff with the kubelet's retries), so its rollout stalls and, once
`progressDeadlineSeconds` pass without progress, the Deployment's Progressing condition
turns False (ProgressDeadlineExceeded). Pods on a NotReady node are not ready.

The controllers record the Events their upstream counterparts do (scheduler, kubelet,
replicaset/deployment/daemonset controllers, node lifecycle) when given a `Recorder`.

Status is computed from the pods alone, so every reconcile is idempotent and writes
nothing when nothing changed. Reconciles run from the loop (never inside a store write),
coalesced per object.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
import time
import zlib
from typing import Any

from lab.controllers import images
from lab.controllers.common import (
    DAEMONSETS,
    DEPLOYMENTS,
    NODES,
    PODS,
    REPLICASETS,
    Timers,
    condition,
    controller_of,
    is_control_plane,
    node_ready,
    owned_by,
    owner_ref,
    safe_hash,
    set_condition,
    write_status,
)
from lab.controllers.events import NORMAL, WARNING, Recorder
from lab.store import ApiError, Event, Obj, ObjectStore, now_iso

DEFAULT_PROGRESS_DEADLINE = 600
_REVISION = "deployment.kubernetes.io/revision"
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


def pod_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond["status"] == "True"


def _scaled(value: Any, total: int, *, round_up: bool) -> int:
    """Resolves an int-or-percent rollout budget against `total` (like intstr)."""
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


class WorkloadController:
    """Workload controllers of one cluster.

    With `instant=True` pods are created already running: used to seed settled clusters
    without waiting for timers. `missing_images` lists references whose pulls fail (the
    image-missing fault), as written or normalized.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        timers: Timers | None = None,
        rollout_delay: float = 0.5,
        instant: bool = False,
        recorder: Recorder | None = None,
    ) -> None:
        self.store = store
        self.timers = timers or Timers()
        self.rollout_delay = rollout_delay
        self.instant = instant
        self.recorder = recorder
        self.missing_images: frozenset[str] = frozenset()
        self._pull_failures: dict[tuple[str, str], int] = {}  # pod -> failed pulls so far
        self._node_ready: dict[str, bool] = {}
        self._rng = random.Random(store.cluster)
        self._ip = itertools.count(2)
        self._active = False
        # (namespace, name) -> (progress marker, monotonic time it last changed)
        self._progress: dict[tuple[str, str], tuple[tuple[int, ...], float]] = {}

    # ---- wiring ------------------------------------------------------------------------

    def start(self) -> None:
        """Listens to the store and reconciles everything once (catch up after restore)."""
        self._active = True
        self.store.add_listener(self.on_event)
        for d in self.store.list(DEPLOYMENTS):
            self._queue_deployment(d["metadata"]["namespace"], d["metadata"]["name"])
        for ds in self.store.list(DAEMONSETS):
            self._queue_daemonset(ds["metadata"]["namespace"], ds["metadata"]["name"])
        for pod in self.store.list(PODS):
            if pod.get("status", {}).get("phase") in (None, "Pending"):
                self._queue_pod(pod)  # re-arms start timers lost in a restart

    def stop(self) -> None:
        self._active = False
        self.timers.cancel_all()

    def on_event(self, event: Event) -> None:
        if not self._active:
            return
        obj, meta = event.object, event.object["metadata"]
        if event.key == DEPLOYMENTS:
            if event.type == "DELETED":
                self.timers.soon(("gc", meta["uid"]), lambda: self._collect(meta["uid"]))
            else:
                self._queue_deployment(meta["namespace"], meta["name"])
        elif event.key == DAEMONSETS:
            if event.type == "DELETED":
                self.timers.soon(("gc", meta["uid"]), lambda: self._collect(meta["uid"]))
            else:
                self._queue_daemonset(meta["namespace"], meta["name"])
        elif event.key == REPLICASETS and event.type == "DELETED":
            self.timers.soon(("gc", meta["uid"]), lambda: self._collect(meta["uid"]))
        elif event.key == PODS:
            if event.type == "ADDED" and "phase" not in obj.get("status", {}):
                self._queue_pod(obj)
            elif event.type == "DELETED":
                key = (meta["namespace"], meta["name"])
                self._pull_failures.pop(key, None)
                for step in ("start", "backoff", "pull"):
                    self.timers.cancel((step, *key))
            self._queue_owner(obj)
        elif event.key == NODES:
            name = meta["name"]
            self.timers.soon(("node", name), lambda: self._sync_node(name))

    def _queue_deployment(self, ns: str, name: str) -> None:
        self.timers.soon(("deploy", ns, name), lambda: self.reconcile_deployment(ns, name))

    def _queue_daemonset(self, ns: str, name: str) -> None:
        self.timers.soon(("ds", ns, name), lambda: self.reconcile_daemonset(ns, name))

    def _queue_pod(self, pod: Obj) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.timers.soon(("schedule", ns, name), lambda: self._schedule_pod(ns, name))

    def _queue_owner(self, pod: Obj) -> None:
        ns, ref = pod["metadata"]["namespace"], controller_of(pod)
        if ref is None:
            return
        if ref["kind"] == "DaemonSet":
            self._queue_daemonset(ns, ref["name"])
        elif ref["kind"] == "ReplicaSet":
            rs = self.store.find(REPLICASETS, ns, ref["name"])
            owner = controller_of(rs) if rs else None
            if owner is not None and owner["kind"] == "Deployment":
                self._queue_deployment(ns, owner["name"])

    # ---- deployments -------------------------------------------------------------------

    def reconcile_deployment(self, ns: str, name: str) -> None:
        d = self.store.find(DEPLOYMENTS, ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d["spec"]
        desired = int(spec.get("replicas", 1))
        new_rs = self._ensure_replicaset(d)
        uid = d["metadata"]["uid"]
        all_rs = [rs for rs in self.store.list(REPLICASETS, ns) if owned_by(rs, uid)]
        pods = self._pods_by_owner(ns)
        new_uid = new_rs["metadata"]["uid"]
        old_pods = [
            p
            for rs in all_rs
            if rs["metadata"]["uid"] != new_uid
            for p in pods.get(rs["metadata"]["uid"], [])
        ]
        new_pods = pods.get(new_uid, [])

        strategy = spec.get("strategy", {})
        rolling = strategy.get("rollingUpdate", {})
        surge = _scaled(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = _scaled(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        recreate = strategy.get("type") == "Recreate"

        if not spec.get("paused"):
            new_pods = self._trim(new_pods, desired)
            ready = sum(pod_ready(p) for p in new_pods + old_pods)
            keep = []
            for pod in sorted(old_pods, key=pod_ready):
                if recreate or not pod_ready(pod) or ready - 1 >= desired - unavailable:
                    ready -= pod_ready(pod)
                    self._delete_pod(pod)
                else:
                    keep.append(pod)
            old_pods = keep
            limit = desired + (0 if recreate else surge)
            while (
                len(new_pods) < desired
                and len(new_pods) + len(old_pods) < limit
                and not (recreate and old_pods)
            ):
                new_pods.append(self._create_pod(new_rs, new_rs["spec"]["template"]))

        self._write_replicaset_status(all_rs, new_rs, pods, new_pods)
        self._write_deployment_status(d, new_rs, new_pods, old_pods, desired, unavailable)

    def _ensure_replicaset(self, d: Obj) -> Obj:
        meta = d["metadata"]
        template = copy.deepcopy(d["spec"]["template"])
        pod_hash = safe_hash(template)
        name = f"{meta['name']}-{pod_hash}"
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
        owned = [
            rs
            for rs in self.store.list(REPLICASETS, meta["namespace"])
            if owned_by(rs, meta["uid"])
        ]
        revision = 1 + max(
            (int(rs["metadata"].get("annotations", {}).get(_REVISION, 0)) for rs in owned),
            default=0,
        )
        rs = self.store.find(REPLICASETS, meta["namespace"], name)
        if rs is not None:
            current = rs["metadata"].get("annotations", {}).get(_REVISION)
            if current and int(current) == revision - 1:
                return rs
            rs = copy.deepcopy(rs)  # a rollback: the old template becomes the newest revision
            rs["metadata"].setdefault("annotations", {})[_REVISION] = str(revision)
            return self.store.update(REPLICASETS, rs)
        selector = copy.deepcopy(d["spec"].get("selector", {}))
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        labels = dict(template["metadata"]["labels"])
        return self.store.create(
            REPLICASETS,
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": {_REVISION: str(revision)},
                    "ownerReferences": [owner_ref(d, "Deployment", "apps/v1")],
                },
                "spec": {"replicas": 0, "selector": selector, "template": template},
            },
        )

    def _trim(self, pods: list[Obj], desired: int) -> list[Obj]:
        """Deletes pods beyond `desired`, not-ready ones first; returns the survivors."""
        pods = sorted(pods, key=pod_ready, reverse=True)
        for pod in pods[desired:]:
            self._delete_pod(pod)
        return pods[:desired]

    def _write_replicaset_status(
        self, all_rs: list[Obj], new_rs: Obj, pods: dict[str, list[Obj]], new_pods: list[Obj]
    ) -> None:
        known = {rs["metadata"]["uid"] for rs in all_rs}
        for rs in all_rs + ([] if new_rs["metadata"]["uid"] in known else [new_rs]):
            rs = (
                self.store.find(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])
                or rs
            )
            uid = rs["metadata"]["uid"]
            mine = new_pods if uid == new_rs["metadata"]["uid"] else pods.get(uid, [])
            live = [
                p
                for p in mine
                if self.store.find(PODS, p["metadata"]["namespace"], p["metadata"]["name"])
            ]
            if rs["spec"].get("replicas") != len(live):
                before = int(rs["spec"].get("replicas", 0))
                rs = copy.deepcopy(rs)
                rs["spec"]["replicas"] = len(live)
                rs = self.store.update(REPLICASETS, rs)
                self._scaled_event(rs, before, len(live))
            ready = sum(pod_ready(p) for p in live)
            status = {
                "replicas": len(live),
                "fullyLabeledReplicas": len(live),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"]["generation"],
            }
            for field in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
                if not status[field]:
                    del status[field]  # omitempty, as the API server serves it
            write_status(self.store, REPLICASETS, rs, status)

    def _write_deployment_status(
        self,
        d: Obj,
        new_rs: Obj,
        new_pods: list[Obj],
        old_pods: list[Obj],
        desired: int,
        max_unavailable: int,
    ) -> None:
        d = self.store.get(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"])
        key = (d["metadata"]["namespace"], d["metadata"]["name"])
        total = len(new_pods) + len(old_pods)
        available = sum(pod_ready(p) for p in new_pods + old_pods)
        updated_ready = sum(pod_ready(p) for p in new_pods)
        status = copy.deepcopy(d.get("status", {}))
        status.update(
            observedGeneration=d["metadata"]["generation"],
            replicas=total,
            updatedReplicas=len(new_pods),
            readyReplicas=available,
            availableReplicas=available,
            unavailableReplicas=max(0, total - available),
        )
        for field in (
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ):
            if not status[field]:
                del status[field]  # the API server omits zero counts
        conditions = status.setdefault("conditions", [])
        if available >= desired - max_unavailable:
            set_condition(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            set_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        rs_name = new_rs["metadata"]["name"]
        complete = len(new_pods) == desired and total == desired and updated_ready == desired
        marker = (d["metadata"]["generation"], len(new_pods), updated_ready, total)
        now = time.monotonic()
        last_marker, since = self._progress.get(key, (None, now))
        if marker != last_marker:
            since = now
        self._progress[key] = (marker, since)
        deadline = int(d["spec"].get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE))
        progressing = condition(d, "Progressing")
        if complete:
            self.timers.cancel(("deadline",) + key)
            set_condition(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif (
            progressing is not None
            and progressing.get("reason") == "ProgressDeadlineExceeded"
            and marker == last_marker
        ):
            pass  # stays failed until something moves
        elif now - since >= deadline:
            set_condition(
                conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            reason = "ReplicaSetUpdated" if progressing is not None else "NewReplicaSetCreated"
            message = (
                f'ReplicaSet "{rs_name}" is progressing.'
                if progressing is not None
                else f'Created new replica set "{rs_name}"'
            )
            set_condition(conditions, "Progressing", "True", reason, message)
            ns, name = key
            self.timers.later(
                ("deadline",) + key,
                since + deadline - now,
                lambda: self.reconcile_deployment(ns, name),
            )
        for cond in conditions:
            cond.setdefault("lastUpdateTime", cond["lastTransitionTime"])
        write_status(self.store, DEPLOYMENTS, d, status)

    def _scaled_event(self, rs: Obj, before: int, after: int) -> None:
        ref = controller_of(rs)
        owner = (
            self.store.find(DEPLOYMENTS, rs["metadata"]["namespace"], ref["name"]) if ref else None
        )
        if owner is not None:
            self._record(
                owner,
                NORMAL,
                "ScalingReplicaSet",
                f"Scaled {'up' if after > before else 'down'} replica set "
                f"{rs['metadata']['name']} from {before} to {after}",
                component="deployment-controller",
            )

    # ---- daemonsets --------------------------------------------------------------------

    def reconcile_daemonset(self, ns: str, name: str) -> None:
        ds = self.store.find(DAEMONSETS, ns, name)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        template = copy.deepcopy(ds["spec"]["template"])
        rev = safe_hash(template)
        template.setdefault("metadata", {}).setdefault("labels", {})["controller-revision-hash"] = (
            rev
        )
        nodes = self.store.list(NODES)
        node_names = {n["metadata"]["name"] for n in nodes}
        pods = self._pods_by_owner(ns).get(ds["metadata"]["uid"], [])
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            by_node.setdefault(pod["spec"].get("nodeName", ""), []).append(pod)
        for node_name, extra in by_node.items():
            doomed = extra if node_name not in node_names else extra[1:]
            for pod in doomed:
                self._delete_pod(pod)
        current = {n: ps[0] for n, ps in by_node.items() if n in node_names}

        rolling = ds["spec"].get("updateStrategy", {})
        if rolling.get("type", "RollingUpdate") == "RollingUpdate":
            budget = (
                _scaled(
                    rolling.get("rollingUpdate", {}).get("maxUnavailable", 1),
                    len(nodes),
                    round_up=True,
                )
                or 1
            )
            unavailable = sum(
                1 for n in node_names if n not in current or not pod_ready(current[n])
            )
            for node_name, pod in sorted(current.items(), key=lambda item: pod_ready(item[1])):
                if _label(pod, "controller-revision-hash") == rev:
                    continue
                if not pod_ready(pod) or unavailable < budget:
                    unavailable += pod_ready(pod)
                    self._delete_pod(pod)
                    del current[node_name]
        owner = owner_ref(ds, "DaemonSet", "apps/v1")
        for node in nodes:
            node_name = node["metadata"]["name"]
            if node_name not in current:
                current[node_name] = self._create_pod_from(ds, owner, template, node=node)

        ready = sum(pod_ready(p) for p in current.values())
        updated = sum(_label(p, "controller-revision-hash") == rev for p in current.values())
        status = {
            "currentNumberScheduled": len(current),
            "desiredNumberScheduled": len(nodes),
            "numberMisscheduled": 0,
            "numberReady": ready,
            "observedGeneration": ds["metadata"]["generation"],
            "updatedNumberScheduled": updated,
            "numberAvailable": ready,
            "numberUnavailable": len(nodes) - ready,
        }
        for field in ("numberAvailable", "numberUnavailable", "updatedNumberScheduled"):
            if not status[field]:
                del status[field]
        write_status(self.store, DAEMONSETS, self.store.get(DAEMONSETS, ns, name), status)

    # ---- pods --------------------------------------------------------------------------

    def _pods_by_owner(self, ns: str) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for pod in self.store.list(PODS, ns):
            ref = controller_of(pod)
            if ref is not None and not pod["metadata"].get("deletionTimestamp"):
                out.setdefault(ref["uid"], []).append(pod)
        return out

    def _create_pod(self, rs: Obj, template: Obj) -> Obj:
        return self._create_pod_from(rs, owner_ref(rs, "ReplicaSet", "apps/v1"), template)

    def _create_pod_from(
        self, owner: Obj, ref: Obj, template: Obj, *, node: Obj | None = None
    ) -> Obj:
        meta = template.get("metadata", {})
        suffix = "".join(self._rng.choice(_SUFFIX) for _ in range(5))
        spec = copy.deepcopy(template.get("spec", {}))
        if node is not None:
            spec["nodeName"] = node["metadata"]["name"]
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("serviceAccountName", "default")
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{owner['metadata']['name']}-{suffix}",
                "namespace": owner["metadata"]["namespace"],
                "labels": dict(meta.get("labels", {})),
                "annotations": dict(meta.get("annotations", {})),
                "ownerReferences": [ref],
            },
            "spec": spec,
        }
        if self.instant:
            if node is None:
                self._assign_node(pod)
            pod["status"] = self._started_status(pod)
        created = self.store.create(PODS, pod)  # without status, the ADDED event schedules it
        self._record(
            owner,
            NORMAL,
            "SuccessfulCreate",
            f"Created pod: {created['metadata']['name']}",
            component=_controller_name(ref["kind"]),
        )
        return created

    def _delete_pod(self, pod: Obj) -> None:
        try:
            self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError:
            return  # already gone
        ref = controller_of(pod)
        key = {"ReplicaSet": REPLICASETS, "DaemonSet": DAEMONSETS}.get(ref["kind"]) if ref else None
        owner = (
            self.store.find(key, pod["metadata"]["namespace"], ref["name"]) if key and ref else None
        )
        if owner is not None and ref is not None:
            self._record(
                owner,
                NORMAL,
                "SuccessfulDelete",
                f"Deleted pod: {pod['metadata']['name']}",
                component=_controller_name(ref["kind"]),
            )

    def _record(self, obj: Obj, type_: str, reason: str, message: str, **kw: str) -> None:
        if self.recorder is not None:
            self.recorder.record(obj, type_, reason, message, **kw)

    def _schedule_pod(self, ns: str, name: str) -> None:
        """Binds a new pod to a node and starts its containers after `rollout_delay`."""
        pod = self.store.find(PODS, ns, name)
        if pod is None:
            return
        status = pod.get("status", {})
        if status.get("containerStatuses"):
            if status.get("phase") == "Pending" and _waiting(pod, _RETRIED):
                self._arm_start(ns, name)  # resumed after a restore
            return
        if status.get("phase") not in (None, "Pending"):
            return
        if not pod["spec"].get("nodeName"):
            pod = copy.deepcopy(pod)
            if not self._assign_node(pod):
                unschedulable = _unschedulable_status(status)
                if status != unschedulable:
                    self._record(
                        pod,
                        WARNING,
                        "FailedScheduling",
                        unschedulable["conditions"][0]["message"],
                        component="default-scheduler",
                    )
                write_status(self.store, PODS, pod, unschedulable)
                return
            pod = self.store.update(PODS, pod)
            self._record(
                pod,
                NORMAL,
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {pod['spec']['nodeName']}",
                component="default-scheduler",
            )
        write_status(self.store, PODS, pod, self._pending_status(pod))
        self._arm_start(ns, name)

    def _arm_start(self, ns: str, name: str) -> None:
        self.timers.later(
            ("start", ns, name), self.rollout_delay, lambda: self._start_pod(ns, name)
        )

    def _assign_node(self, pod: Obj) -> bool:
        nodes = [
            n
            for n in self.store.list(NODES)
            if node_ready(n) and not n["spec"].get("unschedulable")
        ]
        if not nodes:
            return False
        workers = [n for n in nodes if not is_control_plane(n)] or nodes
        load: dict[str, int] = {n["metadata"]["name"]: 0 for n in workers}
        for other in self.store.list(PODS):
            node_name = other["spec"].get("nodeName")
            if node_name in load:
                load[node_name] += 1
        pod["spec"]["nodeName"] = min(load, key=lambda n: (load[n], n))
        return True

    def _start_pod(self, ns: str, name: str) -> None:
        """The kubelet pulls each container's image and starts it, or reports the failure
        (a failed pull backs off and retries, as the kubelet's image manager does)."""
        pod = self.store.find(PODS, ns, name)
        if pod is None:
            return
        waiting: dict[str, Obj] = {}
        failed_pull = False
        running = {
            cs["name"]
            for cs in pod.get("status", {}).get("containerStatuses", [])
            if "running" in cs.get("state", {})
        }
        for c in pod["spec"].get("containers", []):
            if c["name"] in running:
                continue  # a retry pulls only what failed
            image, path = c.get("image", ""), f"spec.containers{{{c['name']}}}"
            ref = images.parse(image)
            if isinstance(ref, str):
                message = images.invalid_message(image, ref)
                waiting[c["name"]] = {"reason": images.INVALID, "message": message}
                self._kubelet_event(pod, WARNING, "InspectFailed", message, path)
                self._kubelet_event(pod, WARNING, "Failed", f"Error: {images.INVALID}", path)
                continue
            self._kubelet_event(pod, NORMAL, "Pulling", f'Pulling image "{image}"', path)
            if images.missing(image, ref, self.missing_images):
                error = images.pull_error(ref)
                waiting[c["name"]] = {"reason": images.PULL_ERROR, "message": error}
                failed_pull = True
                self._kubelet_event(
                    pod, WARNING, "Failed", f'Failed to pull image "{image}": {error}', path
                )
                self._kubelet_event(pod, WARNING, "Failed", f"Error: {images.PULL_ERROR}", path)
                continue
            took = f"{self.rollout_delay:.3g}s"
            size = zlib.crc32(ref.normalized.encode()) % 90_000_000 + 5_000_000
            self._kubelet_event(
                pod,
                NORMAL,
                "Pulled",
                f'Successfully pulled image "{image}" in {took} ({took} including waiting). '
                f"Image size: {size} bytes.",
                path,
            )
            self._kubelet_event(pod, NORMAL, "Created", f"Created container: {c['name']}", path)
            self._kubelet_event(pod, NORMAL, "Started", f"Started container {c['name']}", path)
        write_status(self.store, PODS, pod, self._started_status(pod, waiting=waiting))
        if failed_pull:
            key = (ns, name)
            failures = self._pull_failures.get(key, 0) + 1
            self._pull_failures[key] = failures
            self.timers.later(
                ("backoff", *key), self.rollout_delay, lambda: self._back_off(ns, name)
            )
            delay = min(images.BACKOFF_INITIAL * 2 ** (failures - 1), images.BACKOFF_MAX)
            self.timers.later(("pull", *key), delay, lambda: self._start_pod(ns, name))
        else:
            self._pull_failures.pop((ns, name), None)

    def _back_off(self, ns: str, name: str) -> None:
        """After a failed pull the kubelet waits: ErrImagePull becomes ImagePullBackOff."""
        pod = self.store.find(PODS, ns, name)
        if pod is None:
            return
        status = copy.deepcopy(pod.get("status", {}))
        for cs in status.get("containerStatuses", []):
            waiting = cs.get("state", {}).get("waiting", {})
            if waiting.get("reason") != images.PULL_ERROR:
                continue
            image, path = cs["image"], f"spec.containers{{{cs['name']}}}"
            waiting.update(
                reason=images.PULL_BACKOFF,
                message=f'Back-off pulling image "{image}": {images.PULL_ERROR}: '
                f"{waiting.get('message', '')}",
            )
            self._kubelet_event(pod, NORMAL, "BackOff", f'Back-off pulling image "{image}"', path)
            self._kubelet_event(pod, WARNING, "Failed", f"Error: {images.PULL_BACKOFF}", path)
        write_status(self.store, PODS, pod, status)

    def _kubelet_event(self, pod: Obj, type_: str, reason: str, message: str, path: str) -> None:
        self._record(
            pod,
            type_,
            reason,
            message,
            component="kubelet",
            host=pod["spec"].get("nodeName", ""),
            field_path=path,
        )

    def _sync_node(self, node_name: str) -> None:
        """Node readiness changed: pods there follow, unscheduled pods get another chance."""
        node = self.store.find(NODES, "", node_name)
        ready = node_ready(node)
        was_ready = self._node_ready.get(node_name, True)
        if node is None:
            self._node_ready.pop(node_name, None)
        else:
            self._node_ready[node_name] = ready
            if ready != was_ready:
                state = "NodeReady" if ready else "NodeNotReady"
                self._record(
                    node,
                    NORMAL,
                    state,
                    f"Node {node_name} status is now: {state}",
                    component="node-controller",
                )
        for pod in self.store.list(PODS):
            status = pod.get("status", {})
            if pod["spec"].get("nodeName") == node_name and status.get("phase") == "Running":
                if node is not None and not ready and was_ready:
                    self._record(
                        pod,
                        WARNING,
                        "NodeNotReady",
                        "Node is not ready",
                        component="node-controller",
                    )
                write_status(self.store, PODS, pod, self._started_status(pod, node=node))
            elif status.get("phase") == "Pending" and not pod["spec"].get("nodeName"):
                self._queue_pod(pod)
        for ds in self.store.list(DAEMONSETS):
            self._queue_daemonset(ds["metadata"]["namespace"], ds["metadata"]["name"])

    def _collect(self, uid: str) -> None:
        """Garbage collection: deletes what a removed owner owned (cascading)."""
        for key in (REPLICASETS, PODS):
            for obj in self.store.list(key):
                if owned_by(obj, uid):
                    with contextlib.suppress(ApiError):
                        self.store.delete(
                            key, obj["metadata"]["namespace"], obj["metadata"]["name"]
                        )

    # ---- pod status shapes -------------------------------------------------------------

    def _pending_status(self, pod: Obj) -> Obj:
        now = now_iso()
        return {
            "phase": "Pending",
            "hostIP": self._host_ip(pod),
            "startTime": now,
            "qosClass": "BestEffort",
            "conditions": [
                _cond("Initialized", "True", now),
                _cond("Ready", "False", now, "ContainersNotReady"),
                _cond("ContainersReady", "False", now, "ContainersNotReady"),
                _cond("PodScheduled", "True", now),
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
                for c in pod["spec"].get("containers", [])
            ],
        }

    def _started_status(
        self, pod: Obj, *, node: Obj | None = None, waiting: dict[str, Obj] | None = None
    ) -> Obj:
        """Running (ready if its node is), or Pending with the `waiting` containers (by
        name: their waiting reason and message) not started."""
        node = node or self.store.find(NODES, "", pod["spec"].get("nodeName", ""))
        waiting = waiting or {}
        containers = pod["spec"].get("containers", [])
        previous = pod.get("status", {})
        old_states = {
            cs["name"]: cs.get("state", {}) for cs in previous.get("containerStatuses", [])
        }
        started = previous.get("startTime") or now_iso()
        ready = not waiting and node_ready(node)
        old_conds = {c["type"]: c for c in previous.get("conditions", [])}

        def cond(type_: str, ok: bool, reason: str = "") -> Obj:
            status = "True" if ok else "False"
            old = old_conds.get(type_)
            if old is not None and old["status"] == status:
                return old
            return _cond(type_, status, now_iso(), "" if ok else reason)

        statuses = []
        for c in containers:
            image = c.get("image", "")
            if c["name"] in waiting:
                state: Obj = {"waiting": dict(waiting[c["name"]])}
            else:
                running = old_states.get(c["name"], {}).get("running")
                state = {"running": running or {"startedAt": now_iso()}}
            ref = images.parse(image)
            normalized = ref.normalized if isinstance(ref, images.Reference) else image
            up = c["name"] not in waiting
            statuses.append(
                {
                    "name": c["name"],
                    "image": image,
                    "imageID": f"{normalized.split('@')[0].rsplit(':', 1)[0]}"
                    f"@sha256:{safe_hash(image, 16)}"
                    if up
                    else "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": up,
                    "state": state,
                }
            )
        return {
            "phase": "Pending" if waiting else "Running",
            "hostIP": self._host_ip(pod),
            "podIP": previous.get("podIP")
            or f"10.244.{next(self._ip) % 250}.{self._rng.randint(2, 250)}",
            "startTime": started,
            "qosClass": "BestEffort",
            "conditions": [
                cond("Initialized", True),
                cond("Ready", ready, "ContainersNotReady"),
                cond("ContainersReady", ready, "ContainersNotReady"),
                cond("PodScheduled", True),
            ],
            "containerStatuses": statuses,
        }

    def _host_ip(self, pod: Obj) -> str:
        node = self.store.find(NODES, "", pod["spec"].get("nodeName", ""))
        for addr in (node or {}).get("status", {}).get("addresses", []):
            if addr["type"] == "InternalIP":
                return str(addr["address"])
        return ""


def _cond(type_: str, status: str, now: str, reason: str = "") -> Obj:
    cond: Obj = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    return cond


# Waiting reasons after which the kubelet tries again (a restored pod resumes there).
_RETRIED = frozenset({"ContainerCreating", images.PULL_ERROR, images.PULL_BACKOFF})


def _waiting(pod: Obj, reasons: frozenset[str]) -> bool:
    return any(
        cs.get("state", {}).get("waiting", {}).get("reason") in reasons
        for cs in pod.get("status", {}).get("containerStatuses", [])
    )


def _unschedulable_status(previous: Obj) -> Obj:
    old = next((c for c in previous.get("conditions", []) if c["type"] == "PodScheduled"), None)
    return {
        "phase": "Pending",
        "qosClass": "BestEffort",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/0 nodes are available: no Ready, schedulable node.",
                "lastProbeTime": None,
                "lastTransitionTime": (old or {}).get("lastTransitionTime", now_iso()),
            }
        ],
    }


def _label(obj: Obj, key: str) -> str | None:
    return obj["metadata"].get("labels", {}).get(key)


def _controller_name(owner_kind: str) -> str:
    return {"ReplicaSet": "replicaset-controller", "DaemonSet": "daemonset-controller"}.get(
        owner_kind, "controller-manager"
    )
