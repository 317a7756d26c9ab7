"""`Onboard` (`onboard:<name>`): bring a cluster under Flotilla, or reconcile it again.

Steps: probe (reachable, version, identity) and permission check, both read-only and before
the lock; claim the cluster's identity (its kube-system UID: one record per real cluster,
so the same cluster under a second name is refused, see `ClusterIdentity`); register in the
inventory, which also takes the cluster's lock; install the baseline; record
facts and a first health reading; release the lock with phase `active`. A failure after
registration releases the lock with the phase the record had before (a new cluster stays
`onboarding`). Re-running is safe: the baseline and the record converge on the request.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.access import check_onboarding_access, probe_cluster
    from activities.baseline import install_baseline
    from activities.health import check_cluster_health
    from activities.inventory import (
        claim_cluster_identity,
        record_cluster_health,
        register_cluster,
        release_cluster_lock,
        update_cluster_facts,
    )
    from fleet.ids import cluster_name_error, labels_error
    from fleet.models import (
        BaselineSpec,
        ClusterProbe,
        ClusterRecord,
        ClusterRef,
        FactsUpdate,
        IdentityClaim,
        LockRelease,
        OnboardRequest,
        OnboardResult,
        Phase,
        RegisterRequest,
    )
    from workflows.common import (
        ACCESS_TIMEOUT,
        HEALTH_HEARTBEAT,
        HEALTH_TIMEOUT,
        HEARTBEAT,
        INVENTORY_RETRY,
        INVENTORY_TIMEOUT,
        KUBE_RETRY,
        KUBE_TIMEOUT,
        PROBE_RETRY,
        operation_attributes,
        root_failure,
    )


@workflow.defn(name="Onboard")
class Onboard:
    @workflow.run
    async def run(self, req: OnboardRequest) -> OnboardResult:
        if problem := cluster_name_error(req.name) or labels_error(req.labels):
            raise ApplicationError(problem, type="BadInput", non_retryable=True)
        operation_attributes("onboard", [req.name])
        ref = ClusterRef(name=req.name, credential=req.credential)
        log = {"cluster": req.name}

        self._details(f"probing {req.name} (context {req.credential.context})")
        probe = await self._probe(ref)
        self._details(f"{req.name} answers, {probe.version}; checking permissions")
        try:
            access = await workflow.execute_activity(
                check_onboarding_access,
                ref,
                # One review per permission, each up to a request timeout: heartbeat-guarded.
                start_to_close_timeout=ACCESS_TIMEOUT,
                heartbeat_timeout=KUBE_TIMEOUT,
                retry_policy=KUBE_RETRY,
                summary=f"check permissions on {req.name}",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        if access.missing:
            missing = ", ".join(str(p) for p in access.missing)
            raise ApplicationError(
                f"{req.name}: context {req.credential.context} lacks {len(access.missing)} of "
                f"{access.checked} permissions onboarding needs: {missing}. Grant them, then "
                "onboard again.",
                type="MissingPermissions",
                non_retryable=True,
            )

        if not probe.uid:
            raise ApplicationError(
                f"{req.name}: context {req.credential.context} cannot read the kube-system "
                "namespace, whose UID identifies the cluster; grant get namespaces",
                type="MissingPermissions",
                non_retryable=True,
            )
        self._details(f"claiming the identity of {req.name} (kube-system UID {probe.uid})")
        holder = workflow.info().workflow_id
        try:
            await workflow.execute_activity(
                claim_cluster_identity,
                IdentityClaim(uid=probe.uid, cluster=req.name),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"claim kube-system UID {probe.uid} for {req.name}",
            )
            self._details(f"registering {req.name} and taking its lock")
            registration = await workflow.execute_activity(
                register_cluster,
                RegisterRequest(
                    name=req.name,
                    credential=req.credential,
                    labels=req.labels,
                    management=req.management,
                    api_endpoint=probe.api_endpoint,
                    uid=probe.uid,
                    holder=holder,
                ),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"register {req.name} and lock it",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        previous = registration.previous_phase
        restore = previous if previous not in (None, Phase.OFFBOARDED) else Phase.ONBOARDING
        workflow.logger.info("registered, previous phase %s", previous, extra=log)
        try:
            result = await self._install(req, ref, probe)
        except BaseException:
            try:
                await self._release(req.name, holder, restore)
            except ActivityError:
                workflow.logger.exception("could not release the lock", extra=log)
            raise
        workflow.set_current_details(
            f"**{req.name}** onboarded: {result.record.version}, {result.health.health}"
        )
        return result

    async def _probe(self, ref: ClusterRef) -> ClusterProbe:
        try:
            return await workflow.execute_activity(
                probe_cluster,
                ref,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=PROBE_RETRY,
                summary=f"reach {ref.name}",
            )
        except ActivityError as err:
            failure = root_failure(err)
            if failure.type in ("Unauthorized", "BadCredentialRef"):
                raise failure from None
            raise ApplicationError(
                f"{ref.name} is not reachable through context {ref.credential.context} "
                f"({failure.message}); check the cluster and the kubeconfig, then onboard again",
                type="ClusterUnreachable",
                non_retryable=True,
            ) from None

    async def _install(
        self, req: OnboardRequest, ref: ClusterRef, probe: ClusterProbe
    ) -> OnboardResult:
        try:
            self._details(f"installing the baseline in {req.name}")
            baseline = await workflow.execute_activity(
                install_baseline,
                BaselineSpec(cluster=ref, labels=req.labels),
                start_to_close_timeout=KUBE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"install baseline in {req.name}",
            )
            self._details(f"reading the health of {req.name}")
            health = await workflow.execute_activity(
                check_cluster_health,
                ref,
                start_to_close_timeout=HEALTH_TIMEOUT,
                heartbeat_timeout=HEALTH_HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"health of {req.name}",
            )
            await workflow.execute_activity(
                update_cluster_facts,
                FactsUpdate(
                    cluster=req.name,
                    holder=workflow.info().workflow_id,
                    version=probe.version,
                    node_count=probe.node_count,
                ),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"record facts of {req.name}",
            )
            await workflow.execute_activity(
                record_cluster_health,
                health,
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"record health of {req.name}",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        record = await self._release(req.name, workflow.info().workflow_id, Phase.ACTIVE)
        return OnboardResult(record=record, baseline=baseline, health=health)

    async def _release(self, cluster: str, holder: str, phase: Phase) -> ClusterRecord:
        record = await workflow.execute_activity(
            release_cluster_lock,
            LockRelease(cluster=cluster, holder=holder, phase=phase),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
            summary=f"release the lock of {cluster} ({phase})",
        )
        assert record is not None  # registered above, entities are never deleted
        return record

    @staticmethod
    def _details(text: str) -> None:
        workflow.set_current_details(text)
