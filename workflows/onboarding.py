"""`Onboard` (`onboard:<name>`): bring a cluster under Flotilla, or reconcile it again.

Two steps. The probe (a local activity), read-only and before the lock: reachable,
version, identity, a first health reading and the permissions onboarding needs. Then one
activity writes (activities/onboarding.py): claim the cluster's identity (its kube-system
UID: one record per real cluster, so the same cluster under a second name is refused, see
`ClusterIdentity`), create or refresh the record with the probe's facts and health and take
the cluster's lock, install the baseline, release the lock with phase `active`. One
activity, not three, because each is a round trip through the server (issue 15). If that
step fails for good, the run releases the lock with the phase the record had before (a new
cluster stays `onboarding`). Re-running is safe: the baseline and the record converge on
the request.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.access import probe_cluster
    from activities.inventory import release_cluster_lock
    from activities.onboarding import register_and_install
    from fleet import search
    from fleet.ids import cluster_name_error, labels_error
    from fleet.models import (
        ClusterProbe,
        ClusterRef,
        LockRelease,
        OnboardRequest,
        OnboardResult,
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
            f"identity (kube-system UID {probe.uid}), registering it, installing the "
            "baseline and releasing its lock"
        )
        holder = workflow.info().workflow_id
        try:
            done = await workflow.execute_activity(
                register_and_install,
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
                start_to_close_timeout=KUBE_TIMEOUT + INVENTORY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"register {req.name} (kube-system UID {probe.uid}), install its "
                "baseline, release its lock",
            )
        except BaseException as err:
            try:  # restores the phase from before the lock; a no-op if it was never taken
                await self._release(req.name, holder)
            except ActivityError:
                workflow.logger.exception("could not release the lock", extra=log)
            if isinstance(err, ActivityError):
                raise root_failure(err) from None
            raise
        workflow.logger.info("onboarded, previous phase %s", done.previous_phase, extra=log)
        workflow.set_current_details(
            f"**{req.name}** onboarded: {done.record.version}, {probe.health.health}"
        )
        return OnboardResult(record=done.record, baseline=done.baseline, health=probe.health)

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

    async def _release(self, cluster: str, holder: str) -> None:
        await workflow.execute_activity(
            release_cluster_lock,
            LockRelease(cluster=cluster, holder=holder, phase=None),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
            summary=f"release the lock of {cluster}, restoring its phase",
        )

    @staticmethod
    def _details(text: str) -> None:
        workflow.set_current_details(text)
