"""`ClusterEntity` (`cluster:<name>`): the inventory record of one cluster and its lock.

All state is one `ClusterState`, so continue-as-new only hands it over. Mutations are
updates whose validators reject bad input before anything is written to history; reads
are the `record` query; search attributes mirror the record so the UI can filter the fleet.

The lock admits one mutating operation at a time; its holder is that operation's workflow
id. A holder whose workflow has ended without releasing (terminated, timed out, crashed
before its cleanup) is detected on contention and by a periodic check while locked, and its
lock is broken; `record.last_lock_break` says why.

Offboarding leaves the entity running as a tombstone (phase `offboarded`, no lock), which
keeps the cluster's history listable and lets a later `register` re-activate it.

`ClusterIdentity` (`cluster-uid:<uid>`) admits one record per real cluster: onboarding
claims the cluster's kube-system UID there before it registers, and the claim of a second
name is refused while the first still stands for that cluster. Keyed by UID, two
concurrent onboardings of one cluster meet in the same run, so exactly one wins.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.inventory import check_identity_owner, describe_lock_holder
    from fleet import search
    from fleet.certs import CertRecordRequest, summarize
    from fleet.certs_models import CertReport
    from fleet.ids import labels_error
    from fleet.models import (
        ClusterRecord,
        ClusterState,
        FactsUpdate,
        Health,
        HealthReport,
        HolderQuery,
        IdentityClaim,
        IdentityState,
        LockGrant,
        LockRelease,
        LockRequest,
        OperationLock,
        OwnerQuery,
        Phase,
        RegisterRequest,
        Registration,
        RetireRequest,
    )

# Phase changes an update may make; staying in the same phase is always allowed.
TRANSITIONS: dict[Phase, set[Phase]] = {
    Phase.ONBOARDING: {Phase.ACTIVE, Phase.MAINTENANCE, Phase.OFFBOARDING},
    Phase.ACTIVE: {Phase.UPGRADING, Phase.FAILING_OVER, Phase.MAINTENANCE, Phase.OFFBOARDING},
    Phase.UPGRADING: {Phase.ACTIVE, Phase.MAINTENANCE},
    Phase.FAILING_OVER: {Phase.ACTIVE, Phase.MAINTENANCE},
    Phase.MAINTENANCE: {Phase.ACTIVE, Phase.UPGRADING, Phase.FAILING_OVER, Phase.OFFBOARDING},
    Phase.OFFBOARDING: {Phase.OFFBOARDED, Phase.ACTIVE, Phase.MAINTENANCE, Phase.ONBOARDING},
    Phase.OFFBOARDED: {Phase.ONBOARDING},
}


def transition_error(current: Phase, target: Phase) -> str | None:
    if target == current or target in TRANSITIONS[current]:
        return None
    allowed = ", ".join(sorted(TRANSITIONS[current]))
    return f"cannot move from phase {current} to {target} (allowed: {allowed})"


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidRequest", non_retryable=True)


@workflow.defn(name="ClusterEntity")
class ClusterEntity:
    @workflow.init
    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self._applied: dict[str, str | list[str]] = {}
        self._last_lock_check = workflow.now()

    @property
    def _record(self) -> ClusterRecord:
        return self._state.record

    @workflow.run
    async def run(self, state: ClusterState) -> ClusterRecord:
        self._changed()
        while True:
            # Wake when the lock changes hands (to re-arm the holder check) or to continue
            # as new; other changes need no main-loop work.
            lock = self._record.lock
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda lock=lock: (
                        self._record.lock != lock  # type: ignore[misc]
                        or self._should_continue_as_new()
                    ),
                    timeout=self._lock_check_timeout(),
                    timeout_summary="check the lock holder is alive",
                )
            if self._lock_check_due():
                await self._break_if_stale("periodic check")
            if self._should_continue_as_new():
                workflow.continue_as_new(self._state)

    def _should_continue_as_new(self) -> bool:
        return workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()

    # --- reads --------------------------------------------------------------------------

    @workflow.query
    def record(self) -> ClusterRecord:
        return self._record

    # --- register -----------------------------------------------------------------------

    @workflow.update
    async def register(self, req: RegisterRequest) -> Registration:
        previous = self._record.phase if self._state.registered else None
        if self._record.phase == Phase.OFFBOARDED:
            self._record.phase = Phase.ONBOARDING
            self._record.health = Health.UNKNOWN
        await self._acquire(req.holder, req.operation, phase=None, wait=False)
        rec = self._record
        rec.credential = req.credential
        rec.labels = dict(req.labels)
        # A re-onboarding that names no management cluster keeps the known one: dropping it
        # silently would break the cluster's next Kubernetes upgrade.
        rec.management = req.management or rec.management
        if req.api_endpoint:
            rec.api_endpoint = req.api_endpoint
        if req.uid:
            rec.uid = req.uid
        if req.version:
            rec.version = req.version
        if req.node_count is not None:
            rec.node_count = req.node_count
        if req.health is not None:
            self._take_health(req.health)
        self._state.registered = True
        self._changed()
        return Registration(record=rec, previous_phase=previous)

    @register.validator
    def _validate_register(self, req: RegisterRequest) -> None:
        self._check_cluster(req.name)
        if not req.holder:
            raise _invalid("register needs a holder (the onboarding workflow id)")
        if problem := labels_error(req.labels):
            raise _invalid(problem)
        if req.health is not None and req.health.cluster != req.name:
            raise _invalid(f"a health reading of {req.health.cluster} cannot register {req.name}")
        rec = self._record
        if req.uid and rec.uid and req.uid != rec.uid and rec.phase != Phase.OFFBOARDED:
            raise ApplicationError(
                f"cluster {rec.name} is recorded with kube-system UID {rec.uid}, but its "
                f"context now reaches another cluster ({req.uid}). Onboard that cluster under "
                f"another name, or offboard {rec.name} first (with force if its cluster is "
                "gone)",
                type="IdentityChanged",
                non_retryable=True,
            )

    # --- lock ---------------------------------------------------------------------------

    @workflow.update
    async def acquire_lock(self, req: LockRequest) -> LockGrant:
        return await self._acquire(req.holder, req.operation, phase=req.phase, wait=req.wait)

    @acquire_lock.validator
    def _validate_acquire(self, req: LockRequest) -> None:
        self._check_cluster(req.cluster)
        self._check_not_offboarded()
        if not req.holder or not req.operation:
            raise _invalid("a lock request needs a holder (workflow id) and an operation")
        if req.phase is not None and (problem := transition_error(self._record.phase, req.phase)):
            raise _invalid(f"{req.cluster}: {problem}")

    @workflow.update
    def release_lock(self, req: LockRelease) -> ClusterRecord:
        lock = self._record.lock
        if lock is not None and lock.holder == req.holder:
            self._record.lock = None
            if req.version:
                self._record.version = req.version
            self._set_phase(self._phase_after(lock, req))
            workflow.logger.info("lock released by %s", req.holder, extra=self._log_extra())
            self._changed()
        return self._record

    @release_lock.validator
    def _validate_release(self, req: LockRelease) -> None:
        self._check_cluster(req.cluster)
        if not req.holder:
            raise _invalid("a lock release needs the holder's workflow id")
        lock = self._record.lock
        if lock is None or lock.holder != req.holder:
            return
        if problem := transition_error(self._record.phase, self._phase_after(lock, req)):
            raise _invalid(f"{req.cluster}: {problem}")

    def _phase_after(self, lock: OperationLock, req: LockRelease) -> Phase:
        if req.phase is not None:
            return req.phase
        return lock.previous_phase or self._record.phase

    async def _acquire(
        self, holder: str, operation: str, *, phase: Phase | None, wait: bool
    ) -> LockGrant:
        checked = False
        while True:
            lock = self._record.lock
            if lock is None or lock.holder == holder:
                break
            if not checked:
                checked = True
                if await self._break_if_stale(f"contention with {holder}"):
                    continue
            if not wait:
                raise ApplicationError(
                    f"cluster {self._record.name} is locked by {lock.holder} ({lock.operation} "
                    f"since {lock.acquired_at:%Y-%m-%d %H:%M:%S} UTC); wait for it to finish "
                    "or cancel it, then retry",
                    type="ClusterLocked",
                    non_retryable=True,
                )
            await workflow.wait_condition(
                lambda: self._record.lock is None or self._record.lock.holder == holder
            )
        if phase is not None and (problem := transition_error(self._record.phase, phase)):
            raise _invalid(f"{self._record.name}: {problem}")
        if self._record.lock is None:
            self._record.lock = OperationLock(
                holder=holder,
                operation=operation,
                acquired_at=workflow.now(),
                previous_phase=self._record.phase,
            )
            self._last_lock_check = workflow.now()
            workflow.logger.info("lock granted to %s", holder, extra=self._log_extra())
        if phase is not None:
            self._set_phase(phase)
        self._changed()
        assert self._record.lock is not None
        return LockGrant(
            cluster=self._record.name,
            holder=holder,
            acquired_at=self._record.lock.acquired_at,
            credential=self._record.credential,
            management=self._record.management,
        )

    async def _break_if_stale(self, why: str) -> bool:
        """Breaks the lock if its holder's workflow is no longer running; True if it did
        (or the lock changed meanwhile). If the check itself fails the lock stays."""
        lock = self._record.lock
        if lock is None:
            return True
        self._last_lock_check = workflow.now()
        try:
            status = await workflow.execute_activity(
                describe_lock_holder,
                HolderQuery(workflow_id=lock.holder),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"is lock holder {lock.holder} still running?",
            )
        except ActivityError:
            workflow.logger.warning("could not check lock holder %s", lock.holder)
            return False
        if self._record.lock != lock:
            return True
        if status.running:
            return False
        note = (
            f"broke stale lock of {lock.holder} ({lock.operation}, held since "
            f"{lock.acquired_at:%Y-%m-%d %H:%M:%S} UTC): its workflow is {status.status}; "
            f"found at {workflow.now():%Y-%m-%d %H:%M:%S} UTC on {why}"
        )
        workflow.logger.warning(note, extra=self._log_extra())
        self._record.lock = None
        self._record.phase = lock.previous_phase or self._record.phase
        self._record.last_lock_break = note
        self._changed()
        return True

    def _lock_check_timeout(self) -> timedelta | None:
        if self._record.lock is None:
            return None
        due = self._last_lock_check + timedelta(seconds=self._state.lock_check_seconds)
        return max(due - workflow.now(), timedelta(seconds=1))

    def _lock_check_due(self) -> bool:
        return self._record.lock is not None and workflow.now() - self._last_lock_check >= (
            timedelta(seconds=self._state.lock_check_seconds)
        )

    # --- facts, health, retire ---------------------------------------------------------

    @workflow.update
    def update_facts(self, req: FactsUpdate) -> ClusterRecord:
        rec = self._record
        if req.version is not None:
            rec.version = req.version
        if req.node_count is not None:
            rec.node_count = req.node_count
        if req.labels is not None:
            rec.labels = dict(req.labels)
        if req.api_endpoint is not None:
            rec.api_endpoint = req.api_endpoint
        if req.phase is not None:
            self._set_phase(req.phase)
        self._changed()
        return rec

    @update_facts.validator
    def _validate_facts(self, req: FactsUpdate) -> None:
        self._check_cluster(req.cluster)
        self._check_not_offboarded()
        lock = self._record.lock
        if req.holder and lock is not None and lock.holder != req.holder:
            raise _invalid(f"{req.cluster} is locked by {lock.holder}, not {req.holder}")
        if req.node_count is not None and req.node_count < 0:
            raise _invalid("node_count cannot be negative")
        if req.labels is not None and (problem := labels_error(req.labels)):
            raise _invalid(problem)
        if req.phase is not None and (problem := transition_error(self._record.phase, req.phase)):
            raise _invalid(f"{req.cluster}: {problem}")

    @workflow.update
    def record_health(self, report: HealthReport) -> ClusterRecord:
        """Ignored for offboarded records and for readings older than the last one."""
        if self._take_health(report):
            self._changed()
        return self._record

    def _take_health(self, report: HealthReport) -> bool:
        """Records the reading unless the record is offboarded or has a newer one."""
        rec = self._record
        stale = (
            report.checked_at is not None
            and rec.last_health_at is not None
            and report.checked_at < rec.last_health_at
        )
        if rec.phase == Phase.OFFBOARDED or stale:
            return False
        rec.health = report.health
        rec.health_reason = report.reason
        rec.last_health_at = report.checked_at or workflow.now()
        if report.version:
            rec.version = report.version
        if report.api_ready:
            rec.node_count = report.nodes_total
        return True

    @record_health.validator
    def _validate_health(self, report: HealthReport) -> None:
        self._check_cluster(report.cluster)

    @workflow.update
    def record_certs(self, req: CertRecordRequest) -> ClusterRecord:
        """Keeps the scan's report and its summary; ignored for offboarded records and for
        reports older than the last one."""
        report = req.reports[0]
        last = self._state.cert_report
        if self._record.phase != Phase.OFFBOARDED and (
            last is None or report.scanned_at >= last.scanned_at
        ):
            self._state.cert_report = report
            self._record.certs = summarize(report, req.alert_seconds)
            self._changed()
        return self._record

    @record_certs.validator
    def _validate_certs(self, req: CertRecordRequest) -> None:
        if len(req.reports) != 1:
            raise _invalid("record_certs takes exactly one report")
        self._check_cluster(req.reports[0].cluster)

    @workflow.query
    def cert_report(self) -> CertReport | None:
        return self._state.cert_report

    @workflow.update
    def retire(self, req: RetireRequest) -> ClusterRecord:
        rec = self._record
        if rec.phase != Phase.OFFBOARDED:
            rec.phase = Phase.OFFBOARDED
            rec.lock = None
            rec.health = Health.UNKNOWN
            rec.health_reason = "offboarded"
            workflow.logger.info("retired by %s", req.holder, extra=self._log_extra())
            self._changed()
        return rec

    @retire.validator
    def _validate_retire(self, req: RetireRequest) -> None:
        self._check_cluster(req.cluster)
        rec = self._record
        if rec.phase == Phase.OFFBOARDED:
            return
        if rec.lock is not None and rec.lock.holder != req.holder:
            raise _invalid(f"{req.cluster} is locked by {rec.lock.holder}, not {req.holder}")
        if rec.phase != Phase.OFFBOARDING:
            raise _invalid(f"{req.cluster} must be offboarding to retire, not {rec.phase}")

    # --- helpers ------------------------------------------------------------------------

    def _check_cluster(self, name: str) -> None:
        if name != self._record.name:
            raise _invalid(f"this entity holds cluster {self._record.name}, not {name!r}")

    def _check_not_offboarded(self) -> None:
        if self._record.phase == Phase.OFFBOARDED:
            raise ApplicationError(
                f"cluster {self._record.name} is offboarded; onboard it again first",
                type="ClusterOffboarded",
                non_retryable=True,
            )

    def _set_phase(self, phase: Phase) -> None:
        self._record.phase = phase
        if phase == Phase.ACTIVE and self._record.onboarded_at is None:
            self._record.onboarded_at = workflow.now()

    def _log_extra(self) -> dict[str, str]:
        return {"cluster": self._record.name, "workflow_id": workflow.info().workflow_id}

    def _changed(self) -> None:
        """Call after every mutation: stamps the record, syncs search attributes and the
        UI details."""
        rec = self._record
        rec.updated_at = workflow.now()
        self._sync_search_attributes()
        holder = f"locked by {rec.lock.holder}" if rec.lock else "unlocked"
        certs = ""
        if rec.certs is not None:
            soonest = f" (soonest {rec.certs.soonest:%Y-%m-%d})" if rec.certs.soonest else ""
            certs = f", certificates {rec.certs.status}{soonest}"
        workflow.set_current_details(
            f"**{rec.name}**: phase {rec.phase}, health {rec.health}, "
            f"version {rec.version or '?'}, {rec.node_count} nodes, {holder}{certs}"
        )

    def _sync_search_attributes(self) -> None:
        rec = self._record
        keywords = [
            (search.KIND, "cluster"),
            (search.ENV, rec.labels.get("env", "")),
            (search.REGION, rec.labels.get("region", "")),
            (search.PHASE, str(rec.phase)),
            (search.VERSION, rec.version),
            (search.HEALTH, str(rec.health)),
        ]
        updates: list[SearchAttributeUpdate] = []
        for key, value in keywords:
            if self._applied.get(key.name) != value:
                self._applied[key.name] = value
                updates.append(key.value_set(value) if value else key.value_unset())
        labels = [f"{k}={v}" for k, v in sorted(rec.labels.items())]
        if self._applied.get(search.LABELS.name) != labels:
            self._applied[search.LABELS.name] = labels
            updates.append(
                search.LABELS.value_set(labels) if labels else search.LABELS.value_unset()
            )
        updates += self._cert_attributes()
        if updates:
            workflow.upsert_search_attributes(updates)

    def _cert_attributes(self) -> list[SearchAttributeUpdate]:
        """CERT_EXPIRY and CERT_STATUS once a scan was recorded (none before: histories
        from before certificate scans replay unchanged)."""
        certs = self._record.certs
        if certs is None:
            return []
        updates: list[SearchAttributeUpdate] = []
        status = str(certs.status)
        if self._applied.get(search.CERT_STATUS.name) != status:
            self._applied[search.CERT_STATUS.name] = status
            updates.append(search.CERT_STATUS.value_set(status))
        expiry = certs.soonest.isoformat() if certs.soonest else ""
        if self._applied.get(search.CERT_EXPIRY.name) != expiry:
            self._applied[search.CERT_EXPIRY.name] = expiry
            updates.append(
                search.CERT_EXPIRY.value_set(certs.soonest)
                if certs.soonest
                else search.CERT_EXPIRY.value_unset()
            )
        return updates


@workflow.defn(name="ClusterIdentity")
class ClusterIdentity:
    """Which record owns one real cluster (its kube-system UID); runs until continue-as-new."""

    @workflow.init
    def __init__(self, state: IdentityState) -> None:
        self._state = state

    @workflow.run
    async def run(self, state: IdentityState) -> IdentityState:
        self._details()
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(self._state)

    @workflow.query
    def identity(self) -> IdentityState:
        return self._state

    @workflow.update
    async def claim(self, req: IdentityClaim) -> IdentityState:
        """Granted when free or already owned by `req.cluster` (idempotent). Otherwise the
        owner is checked: if its record no longer stands for this cluster (offboarded,
        another UID, never registered) the claim passes to `req.cluster`; if it does, the
        claim is refused with `DuplicateCluster`."""
        while self._state.owner not in ("", req.cluster):
            owner = self._state.owner
            try:
                status = await workflow.execute_activity(
                    check_identity_owner,
                    OwnerQuery(cluster=owner, uid=self._state.uid),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=5),
                    summary=f"does {owner} still stand for this cluster?",
                )
            except ActivityError as err:
                raise ApplicationError(
                    f"could not check whether {owner} still owns kube-system UID "
                    f"{self._state.uid} ({err.cause or err}); onboard {req.cluster} again",
                    type="IdentityCheckFailed",
                    non_retryable=True,
                ) from None
            if self._state.owner != owner:
                continue  # another claim changed the owner meanwhile: check the new one
            if status.holds:
                raise ApplicationError(
                    f"{req.cluster} is the same cluster as {owner} (kube-system UID "
                    f"{self._state.uid}; {owner}: {status.why}). Flotilla keeps one record per "
                    f"cluster: re-onboard it as {owner}, or offboard {owner} first",
                    type="DuplicateCluster",
                    non_retryable=True,
                )
            self._state.last_release = f"{owner} released on claim by {req.cluster}: {status.why}"
            self._state.owner = ""
        self._state.owner = req.cluster
        self._details()
        return self._state

    @claim.validator
    def _validate_claim(self, req: IdentityClaim) -> None:
        if req.uid != self._state.uid:
            raise _invalid(f"this run holds UID {self._state.uid}, not {req.uid!r}")
        if not req.cluster:
            raise _invalid("a claim needs the cluster name")

    def _details(self) -> None:
        owner = self._state.owner or "nobody"
        workflow.set_current_details(
            f"kube-system UID {self._state.uid}: owned by **{owner}**"
            + (f" ({self._state.last_release})" if self._state.last_release else "")
        )
