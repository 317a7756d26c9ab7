"""CaRotate: one phase of a cluster CA rotation (kind `ca-rotate`, fleet/certs_targets.py).

On the shared skeleton (workflows/cluster_task.py), the change is one activity that brings
the cluster to the phase (stage the new CA on `add`, write `<cluster>-ca`, roll the control
plane out, update the hub's kubeconfig; a phase already published changes nothing and a
phase out of order is refused before anything is written); the verification scans every
consumer of the cluster CA and the served leaf, and fails the cluster on any mismatch.
Each phase is its own wave pass, so an abort between phases leaves every consumer working,
and `rollback` (or running the undo phase) goes back one step while the old CA is trusted.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.cluster_task import ClusterChange, ClusterFailed, activity_failure
from workflows.common import HEARTBEAT, KUBE_RETRY, KUBE_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.cert_rollout import rotate_ca, verify_rotation
    from fleet.certs import short
    from fleet.certs_targets import CaRotateTarget, RotateRequest, RotationState
    from fleet.rollout_models import ClusterResult, ClusterStatus, ClusterTask


@workflow.defn(name="CaRotate")
class CaRotate(ClusterChange):
    lock_operation = "ca-rotate"

    @workflow.run
    async def run(self, task: ClusterTask) -> ClusterResult:
        return await self.execute(task)

    def _request(self, task: ClusterTask) -> RotateRequest:
        assert isinstance(task.operation, CaRotateTarget)
        return RotateRequest(
            cluster=self.access, timeout_seconds=task.timeout_seconds, phase=task.operation.phase
        )

    async def change(self, task: ClusterTask, result: ClusterResult) -> None:
        request = self._request(task)
        self.set_step(f"phase {request.phase.value}")
        # Marked before the write: an undo applies to a cluster this phase may have touched
        # (undoing a phase that did nothing is itself a no-op).
        result.changed = True
        try:
            state: RotationState = await workflow.execute_activity(
                rotate_ca,
                request,
                start_to_close_timeout=timedelta(seconds=task.timeout_seconds + 60),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"CA rotation phase {request.phase.value}",
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None
        result.from_version = f"signer {short(state.old)}"
        result.to_version = f"signer {short(state.signer)}"
        if not state.changed:  # published already; stays `changed` so a rollback undoes it
            result.status = ClusterStatus.UNCHANGED

    async def verify(self, task: ClusterTask, result: ClusterResult) -> None:
        request = self._request(task)
        self.set_step(f"verifying phase {request.phase.value}")
        try:
            state: RotationState = await workflow.execute_activity(
                verify_rotation,
                request,
                start_to_close_timeout=KUBE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"verify phase {request.phase.value}",
            )
        except ActivityError as err:
            raise activity_failure(err, result) from None
        result.to_version = f"signer {short(state.signer)}"
        if state.problems:
            result.status = ClusterStatus.FAILED
            result.reason = f"after phase {request.phase.value}: " + "; ".join(state.problems)
            raise ClusterFailed(result)
