"""`Onboard` (`onboard:<name>`): bring a cluster under Flotilla, or reconcile it again.

Four activities. Probe, read-only and before the lock: reachable, version, identity, a
first health reading and the permissions onboarding needs. Register: claim the cluster's
identity (its kube-system UID: one record per real cluster, so the same cluster under a
second name is refused, see `ClusterIdentity`), then create or refresh the record with the
probe's facts and health and take the cluster's lock. Install the baseline. Release the
lock with phase `active`. A failure after registration releases the lock with the phase the
record had before (a new cluster stays `onboarding`). Re-running is safe: the baseline and
the record converge on the request.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.access import probe_cluster
    from activities.baseline import install_baseline
    from activities.inventory import register_cluster, release_cluster_lock
    from fleet import search
    from fleet.ids import cluster_name_error, labels_error
    from fleet.models import (
        BaselineSpec,
        ClusterProbe,
        ClusterRecord,
        ClusterRef,
        LockRelease,
        OnboardRequest,
        OnboardResult,
        Phase,
        RegisterRequest,
    )
    from workflows.common import (
        HEARTBEAT,
        INVENTORY_RETRY,
        INVENTORY_TIMEOUT,
        KUBE_RETRY,
        KUBE_TIMEOUT,
        PROBE_RETRY,
        operation_attributes,
        root_failure,
    )

# The probe: a few reads and permission reviews, each bounded by its request timeout.
PROBE_TIMEOUT = timedelta(minutes=2)


@workflow.defn(name="Onboard")
class Onboard:
    @workflow.run
    async def run(self, req: OnboardRequest) -> OnboardResult:
        if problem := cluster_name_error(req.name) or labels_error(req.labels):
            raise ApplicationError(problem, type="BadInput", non_retryable=True)
        if search.KIND not in workflow.info().typed_search_attributes:  # the starter sets it
            operation_attributes("onboard", [req.name])
        ref = ClusterRef(name=req.name, credential=req.credential)
        log = {"cluster": req.name}

        self._details(f"probing {req.name} (context {req.credential.context})")
        probe = await self._probe(ref)
        if missing := probe.access.missing:
            raise ApplicationError(
                f"{req.name}: context {req.credential.context} lacks {len(missing)} of "
                f"{probe.access.checked} permissions onboarding needs: "
                f"{', '.join(str(p) for p in missing)}. Grant them, then onboard again.",
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
        self._details(
            f"{req.name} answers, {probe.version}, {probe.health.health}; claiming its "
            f"identity (kube-system UID {probe.uid}), registering it and taking its lock"
        )
        holder = workflow.info().workflow_id
        try:
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
                    version=probe.version,
                    node_count=probe.node_count,
                    health=probe.health,
                ),
                start_to_close_timeout=INVENTORY_TIMEOUT,
                retry_policy=INVENTORY_RETRY,
                summary=f"claim kube-system UID {probe.uid} for {req.name}, register and lock it",
            )
        except ActivityError as err:
            raise root_failure(err) from None
        previous = registration.previous_phase
        restore = previous if previous not in (None, Phase.OFFBOARDED) else Phase.ONBOARDING
        workflow.logger.info("registered, previous phase %s", previous, extra=log)
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
        except BaseException as err:
            try:
                await self._release(req.name, holder, restore)
            except ActivityError:
                workflow.logger.exception("could not release the lock", extra=log)
            if isinstance(err, ActivityError):
                raise root_failure(err) from None
            raise
        record = await self._release(req.name, holder, Phase.ACTIVE)
        workflow.set_current_details(
            f"**{req.name}** onboarded: {record.version}, {probe.health.health}"
        )
        return OnboardResult(record=record, baseline=baseline, health=probe.health)

    async def _probe(self, ref: ClusterRef) -> ClusterProbe:
        try:
            return await workflow.execute_local_activity(
                probe_cluster,
                ref,
                start_to_close_timeout=PROBE_TIMEOUT,
                retry_policy=PROBE_RETRY,
                summary=f"reach {ref.name}",
            )
        except (ActivityError, ApplicationError) as err:  # a local activity's error is bare
            failure = root_failure(err)
            if failure.type in ("Unauthorized", "BadCredentialRef"):
                raise failure from None
            raise ApplicationError(
                f"{ref.name} is not reachable through context {ref.credential.context} "
                f"({failure.message}); check the cluster and the kubeconfig, then onboard again",
                type="ClusterUnreachable",
                non_retryable=True,
            ) from None

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
