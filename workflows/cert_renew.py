"""CertRenew: renew one cluster's certificates that are due (kind `certs-renew`).

On the shared skeleton (workflows/cluster_task.py), the change is: read what is due (the
control plane when a Machine's or the served leaf's expiry is within `within`, each due
cert-manager Certificate with its revision) -> roll the control plane out through Cluster
API and wait -> re-issue the due Certificates and wait. The verification is a full scan:
the hub's handshake verifies, the API server serves a leaf expiring later than before and
every consumer of the cluster CA trusts its signer; the record is that scan on the
inventory record. A cluster with nothing due ends `unchanged`. Renewal cannot be undone
(and needs no undo: the old certificates are simply replaced).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.cluster_task import ClusterChange, ClusterFailed, activity_failure
from workflows.common import HEARTBEAT, INVENTORY_RETRY, INVENTORY_TIMEOUT, KUBE_RETRY, KUBE_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.cert_rollout import (
        check_serving,
        plan_renewal,
        renew_certificates,
        renew_control_plane,
    )
    from activities.certs import record_certificates
    from fleet.certs import CertRecordRequest
    from fleet.certs_models import DEFAULT_ALERT_DAYS, CertReport, CertSource
    from fleet.certs_targets import (
        CertificateRenewals,
        CertRenewTarget,
        ControlPlaneRenewal,
        RenewPlan,
        RenewRequest,
        ServingCheck,
    )
    from fleet.rollout_models import ClusterResult, ClusterStatus, ClusterTask


@workflow.defn(name="CertRenew")
class CertRenew(ClusterChange):
    lock_operation = "certs-renew"

    def __init__(self) -> None:
        super().__init__()
        self._plan = RenewPlan()
        self._report: CertReport | None = None

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        return await self.execute(task)

    async def change(self, task: ClusterTask, result: ClusterResult) -> None:
        target = _target(task)
        request = RenewRequest(
            cluster=self.access, timeout_seconds=task.timeout_seconds, target=target
        )
        wait = timedelta(seconds=task.timeout_seconds + 60)
        try:
            self.set_step("reading what is due")
            self._plan = plan = await workflow.execute_activity(
                plan_renewal,
                request,
                start_to_close_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary="what is due",
            )
            if plan.serving_not_after:
                result.from_version = result.to_version = f"{plan.serving_not_after:%F}"
            if not plan.control_plane_due and not plan.certificates:
                result.status = ClusterStatus.UNCHANGED
                return
            result.changed = True
            if plan.control_plane_due:
                self.set_step("control plane rollout (Cluster API)")
                before = max([*plan.machines.values(), *_served(plan)], default=workflow.now())
                await workflow.execute_activity(
                    renew_control_plane,
                    ControlPlaneRenewal(
                        cluster=self.access, timeout_seconds=task.timeout_seconds, before=before
                    ),
                    start_to_close_timeout=wait,
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=KUBE_RETRY,
                    summary="control plane rollout",
                )
            if plan.certificates:
                self.set_step(f"re-issuing {len(plan.certificates)} Certificate(s)")
                await workflow.execute_activity(
                    renew_certificates,
                    CertificateRenewals(
                        cluster=self.access,
                        timeout_seconds=task.timeout_seconds,
                        certificates=plan.certificates,
                    ),
                    start_to_close_timeout=wait,
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=KUBE_RETRY,
                    summary=f"re-issue {', '.join(sorted(plan.certificates))}"[:200],
                )
        except ActivityError as err:
            raise activity_failure(err, result) from None

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        self.set_step("verifying by handshake")
        after = self._plan.serving_not_after if self._plan.control_plane_due else None
        try:
            report = await workflow.execute_activity(
                check_serving,
                ServingCheck(cluster=self.access, after=after),
                start_to_close_timeout=KUBE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary="handshake and trust check",
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None
        leaf = next((e for e in report.entries if e.source == CertSource.SERVING), None)
        if leaf is not None:
            result.to_version = f"{leaf.not_after:%F}"
        if report.problems:
            result.status = ClusterStatus.FAILED
            result.reason = "after renewal: " + "; ".join(report.problems)
            raise ClusterFailed(result)
        self._report = report

    async def record(self, task: ClusterTask, result: ClusterResult) -> None:
        if self._report is None:
            return
        self.set_step("recording the certificates")
        try:
            await workflow.execute_activity(
                record_certificates,
                CertRecordRequest(reports=[self._report], alert_seconds=DEFAULT_ALERT_DAYS * 86400),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=INVENTORY_RETRY,
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None


def _served(plan: RenewPlan) -> list[datetime]:
    return [plan.serving_not_after] if plan.serving_not_after else []


def _target(task: ClusterTask) -> CertRenewTarget:
    assert isinstance(task.operation, CertRenewTarget)
    return task.operation
