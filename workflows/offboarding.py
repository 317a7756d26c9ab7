"""`Offboard` (`offboard:<name>`): remove what onboarding installed and retire the record.

Takes the cluster's lock (phase `offboarding`), deletes the baseline, then retires the
record (phase `offboarded`, lock cleared; the entity stays as a tombstone, see
workflows/cluster.py). Nothing is deleted unless the credential still reaches the cluster
with the record's kube-system UID: a cluster that is unreachable, unidentified or another
one is left untouched. If the baseline cannot be removed the lock is released with the
previous phase and the run fails, unless `force` asks to retire the record anyway.
Offboarding an already offboarded cluster succeeds without touching it.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.baseline import remove_baseline
    from activities.inventory import (
        acquire_cluster_lock,
        get_cluster_records,
        release_cluster_lock,
        retire_cluster,
        unknown_cluster,
    )
    from fleet.models import (
        BaselineRemoval,
        BaselineTarget,
        LockRelease,
        LockRequest,
        OffboardRequest,
        OffboardResult,
        Phase,
        RecordsQuery,
        RetireRequest,
    )
    from workflows.common import (
        HEARTBEAT,
        INVENTORY_RETRY,
        INVENTORY_TIMEOUT,
        KUBE_RETRY,
        KUBE_TIMEOUT,
        operation_attributes,
        root_failure,
    )


@workflow.defn(name="Offboard")
class Offboard:
    @workflow.run
    async def run(self, req: OffboardRequest) -> OffboardResult:
        operation_attributes("offboard", [req.name])
        holder = workflow.info().workflow_id
        try:
            found = await workflow.execute_activity(
                get_cluster_records,
                RecordsQuery(names=[req.name], include_offboarded=True),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"read the record of {req.name}",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        if not found.records:
            raise unknown_cluster(req.name)
        record = found.records[0]
        if record.phase == Phase.OFFBOARDED:
            workflow.set_current_details(f"**{req.name}** was already offboarded")
            return OffboardResult(record=record, note="already offboarded")
        previous = record.phase

        workflow.set_current_details(f"taking the lock of {req.name}")
        try:
            await workflow.execute_activity(
                acquire_cluster_lock,
                LockRequest(
                    cluster=req.name, holder=holder, operation="offboard", phase=Phase.OFFBOARDING
                ),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"lock {req.name}",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        try:
            target = BaselineTarget(cluster=record.ref(), uid=record.uid)
            removal, note = await self._remove(req, target)
            workflow.set_current_details(f"retiring the record of {req.name}")
            retired = await workflow.execute_activity(
                retire_cluster,
                RetireRequest(cluster=req.name, holder=holder),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"retire {req.name}",
            )
        except BaseException as exc:
            try:
                await workflow.execute_activity(
                    release_cluster_lock,
                    LockRelease(cluster=req.name, holder=holder, phase=previous),
                    start_to_close_timeout=INVENTORY_TIMEOUT,
                    retry_policy=INVENTORY_RETRY,
                    summary=f"release the lock of {req.name}",
                )
            except ActivityError:
                workflow.logger.exception("could not release the lock", extra={"cluster": req.name})
            if isinstance(exc, ActivityError):
                raise root_failure(exc) from None
            raise
        workflow.set_current_details(f"**{req.name}** offboarded. {note}".strip())
        return OffboardResult(record=retired, removal=removal, note=note)

    async def _remove(
        self, req: OffboardRequest, target: BaselineTarget
    ) -> tuple[BaselineRemoval | None, str]:
        workflow.set_current_details(f"removing the baseline from {req.name}")
        try:
            removal = await workflow.execute_activity(
                remove_baseline,
                target,
                start_to_close_timeout=KUBE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"remove baseline from {req.name}",
            )
        except ActivityError as err:
            failure = root_failure(err)
            if not req.force and failure.type in ("IdentityMismatch", "IdentityUnknown"):
                raise failure from None
            if not req.force:
                raise ApplicationError(
                    f"{req.name}: could not remove the baseline ({failure.message}); fix access "
                    "and retry, or offboard with force to retire the record anyway",
                    type="BaselineFailed",
                    non_retryable=True,
                ) from None
            return None, f"baseline left in place (forced): {failure.message}"
        return removal, ""
