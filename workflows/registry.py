"""The operation registry: every fleet operation kind the rollout engine runs, declared once.

An entry names the kind's target model (fleet/targets.py: what changes, how it describes
itself, plan-time problems, whether and how it is undone), its per-cluster child workflow
(on the skeleton in workflows/cluster_task.py), its preflight activity (live checks of a
batch of planned clusters before anything changes) and every activity the child runs. The
engine (workflows/rollout.py), the planner, the CLI and the webhook read entries from here
and never test for a kind; the worker registers every entry's workflow and activities.
docs/adding-an-operation.md walks through adding one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities import (
        addons,
        capi,
        cert_rollout,
        certs,
        database,
        dns,
        dr_observe,
        dr_probe,
        dr_records,
        drift,
        events,
        git,
        manifests,
    )
    from fleet.addon_target import AddonTarget
    from fleet.certs_targets import CaRotateTarget, CertRenewTarget
    from fleet.k8s_target import K8sTarget
    from fleet.rollout_models import ClusterResult, ClusterTask, PreflightRequest, PreflightResult
    from fleet.sync_models import SyncTarget
    from fleet.targets import Target, register_target

from workflows.addon_upgrade import AddonUpgrade
from workflows.cert_renew import CertRenew
from workflows.cert_rotate import CaRotate
from workflows.certs import CertScan
from workflows.dr import RUNS as DR_RUNS
from workflows.dr_app import DrApp, DrGuard
from workflows.dr_watch import DrFence, DrWatch
from workflows.drift import DriftSweep
from workflows.event_relay import EventRelay
from workflows.k8s_upgrade import K8sUpgrade
from workflows.sync import SyncCluster
from workflows.sync_preview import SyncPlan


class ClusterChild(Protocol):
    """A per-cluster child workflow class (see workflows/cluster_task.py)."""

    async def run(self, task: ClusterTask) -> ClusterResult: ...


@dataclass(frozen=True)
class Operation:
    kind: str  # rollout ids are rollout:<kind>:<id>
    target: type[Target]
    child: type[ClusterChild]  # a @workflow.defn class
    # Live checks of a batch of planned clusters; None: the plan needs no live check.
    preflight: Callable[[PreflightRequest], PreflightResult] | None
    # The CLI group: `flotilla <command> plan|start`; "certs renew" nests under `certs`.
    command: str
    help: str  # one line for the CLI and the docs
    activities: tuple[Callable[..., Any], ...] = field(default=())
    # False: the kind has its own CLI group (`flotilla sync`), no generated plan/start.
    generated_cli: bool = True


class Registry:
    """Operation kinds by name; `add` also makes the target decodable in messages."""

    def __init__(self) -> None:
        self._by_kind: dict[str, Operation] = {}

    def add(self, operation: Operation) -> None:
        if operation.kind in self._by_kind:
            raise ValueError(f"operation kind {operation.kind!r} is registered already")
        if operation.target.model_fields["kind"].default != operation.kind:
            raise ValueError(f"{operation.target.__name__}.kind must default to {operation.kind!r}")
        register_target(operation.target)
        self._by_kind[operation.kind] = operation

    def get(self, kind: str) -> Operation:
        try:
            return self._by_kind[kind]
        except KeyError:
            known = ", ".join(sorted(self._by_kind))
            raise KeyError(f"unknown operation kind {kind!r} (known: {known})") from None

    def __iter__(self) -> Iterator[Operation]:
        return iter(list(self._by_kind.values()))


OPERATIONS = Registry()
OPERATIONS.add(
    Operation(
        kind="k8s",
        target=K8sTarget,
        child=K8sUpgrade,
        preflight=capi.preflight_k8s,
        command="upgrade",
        help="Kubernetes version rollouts (Cluster API).",
        activities=(
            capi.read_capi_state,
            capi.upgrade_cluster,
            capi.read_cluster_versions,
            capi.preflight_k8s,
        ),
    )
)
OPERATIONS.add(
    Operation(
        kind="addon",
        target=AddonTarget,
        child=AddonUpgrade,
        preflight=addons.preflight_addon,
        command="addon",
        help="Add-on image rollouts (Deployment/DaemonSet).",
        activities=(
            addons.read_workload,
            addons.set_workload_image,
            addons.wait_workload_rollout,
            addons.preflight_addon,
        ),
    )
)
OPERATIONS.add(
    Operation(
        kind="certs-renew",
        target=CertRenewTarget,
        child=CertRenew,
        preflight=None,
        command="certs renew",
        help="Certificate renewal: control plane (Cluster API rollout) and cert-manager.",
        activities=(
            cert_rollout.plan_renewal,
            cert_rollout.renew_control_plane,
            cert_rollout.renew_certificates,
            cert_rollout.check_serving,
            certs.record_certificates,
        ),
    )
)
OPERATIONS.add(
    Operation(
        kind="ca-rotate",
        target=CaRotateTarget,
        child=CaRotate,
        preflight=None,
        command="certs rotate",
        help="Cluster CA rotation, one phase per run: add, reissue, remove.",
        activities=(cert_rollout.rotate_ca, cert_rollout.verify_rotation),
    )
)
OPERATIONS.add(
    Operation(
        kind="sync",
        target=SyncTarget,
        child=SyncCluster,
        preflight=manifests.preflight_sync,
        command="sync",
        help="Desired state from Git: a commit's bundles to the clusters they are placed on.",
        activities=(
            manifests.apply_cluster,
            manifests.wait_healthy_copy,
            manifests.preflight_sync,
        ),
        generated_cli=False,
    )
)


@dataclass(frozen=True)
class Suite:
    """Workflows that are not "the same change on many clusters" (disaster recovery, the
    certificate scan, sync plans and drift sweeps),
    with their activities and the FlotillaKind values their runs carry: the worker
    registers them and `ops list --kind` accepts the kinds, without naming them."""

    name: str
    workflows: tuple[type, ...]
    activities: tuple[Callable[..., Any], ...]
    kinds: tuple[str, ...] = ()


SUITES: list[Suite] = [
    Suite(
        name="dr",
        workflows=(DrApp, DrGuard, DrWatch, DrFence, *DR_RUNS.values()),
        activities=(
            dr_records.begin_operation,
            dr_records.set_primary,
            dr_records.note_fence,
            dr_records.note_health,
            dr_records.finish_operation,
            dr_records.read_app,
            dr_records.admit_automatic,
            database.read_database,
            database.fence_database,
            database.demote_database,
            database.promote_database,
            database.rebuild_replica,
            database.wait_database,
            dns.read_dns,
            dns.set_dns_target,
            dr_probe.probe_app,
            dr_probe.wait_writable,
            dr_observe.observe_app,
            dr_observe.fence_when_back,
            dr_observe.start_failover,
            dr_observe.start_fence,
            dr_observe.watch_view,
        ),
        kinds=tuple(kind.search_kind for kind in DR_RUNS),
    ),
    Suite(
        name="certs",
        workflows=(CertScan,),
        activities=(certs.scan_and_record,),
        kinds=("certscan",),
    ),
    Suite(
        name="sync",
        workflows=(SyncPlan, DriftSweep),
        activities=(
            git.resolve_git_ref,
            git.place_bundles,
            manifests.preview_clusters,
            drift.check_drift,
        ),
        kinds=("drift",),
    ),
    Suite(
        name="events",
        workflows=(EventRelay,),
        activities=(events.relay_event, events.deliver_event),
    ),
]
