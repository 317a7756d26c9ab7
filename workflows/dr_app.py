"""`DrApp` (`dr-app:<name>`): the DR record of one application, and `DrGuard` (`dr-guard`):
the fleet-wide budget of automatic failovers.

`DrApp` holds the policy, the current primary, the fencing epoch, the running operation,
the clusters whose fence is pending (an old primary that could not be reached), the watch's
view of the primary and the history of runs, all in one `DrAppState`, so continue-as-new
only hands it over. `begin` admits one operation at a time and gives it a new epoch; every
write step checks that epoch (`check_epoch`) before it acts, so a run that lost its
admission (a newer run began, or it finished) can never write again. A holder whose
workflow has ended without `finish` (terminated) is found on contention and replaced.

These records set no FlotillaKind: they are not operations, so `ops list` leaves them
out; `flotilla dr list` finds them by workflow type.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.inventory import describe_lock_holder
    from fleet.dr import (
        KEEP_RUNS,
        ActiveOperation,
        AppSummary,
        BeginRequest,
        DrAppState,
        EpochCheck,
        FenceNote,
        FinishRequest,
        Grant,
        GuardAnswer,
        GuardRequest,
        GuardState,
        HealthNote,
        OpKind,
        RegisterPolicy,
        SetPrimary,
    )
    from fleet.dr_rules import begin_problem, guard_admit, operation_conflict, stale_epoch
    from fleet.models import HolderQuery


def _invalid(message: str, type: str = "InvalidRequest") -> ApplicationError:
    return ApplicationError(message, type=type, non_retryable=True)


@workflow.defn(name="DrApp")
class DrApp:
    @workflow.init
    def __init__(self, state: DrAppState) -> None:
        self._state = state

    @workflow.run
    async def run(self, state: DrAppState) -> DrAppState:
        self._changed()
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._continue_as_new(),
                    timeout=timedelta(hours=12),
                    timeout_summary="idle",
                )
            if self._continue_as_new():
                workflow.continue_as_new(self._state)

    def _continue_as_new(self) -> bool:
        return workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()

    @workflow.query
    def state(self) -> DrAppState:
        return self._state

    # --- policy -------------------------------------------------------------------------

    @workflow.update
    def register(self, req: RegisterPolicy) -> DrAppState:
        """Replaces the policy; the current primary stays (a new record starts at the
        policy's primary)."""
        first = self._state.registered_at is None
        self._state.policy = req.policy
        if first or not req.policy.has(self._state.primary):
            self._state.primary = req.policy.home
        if first:
            self._state.registered_at = workflow.now()
        self._state.pending_fences = [c for c in self._state.pending_fences if req.policy.has(c)]
        self._changed()
        return self._state

    @register.validator
    def _validate_register(self, req: RegisterPolicy) -> None:
        if req.policy.app != self._state.policy.app:
            raise _invalid(f"this record holds {self._state.policy.app}, not {req.policy.app!r}")
        if self._state.operation is not None:
            raise _invalid(
                f"{self._state.operation.kind} {self._state.operation.holder} is running; "
                "change the policy when it has finished",
                "OperationRunning",
            )
        if self._state.registered_at is not None and not req.policy.has(self._state.primary):
            raise _invalid(
                f"{self._state.primary} is the current primary of {req.policy.app}: a new "
                "policy must keep it (switch over first)"
            )

    # --- operations ---------------------------------------------------------------------

    @workflow.update
    async def begin(self, req: BeginRequest) -> Grant:
        active = self._state.operation
        if (
            active is not None
            and active.holder != req.holder
            and not await self._holder_ended(active)
        ):
            raise _invalid(operation_conflict(active, req.holder) or "", "OperationRunning")
        if problem := begin_problem(self._state, req):
            raise _invalid(problem, "BadTarget")
        if self._state.operation is None or self._state.operation.holder != req.holder:
            self._state.epoch += 1
            self._state.operation = ActiveOperation(
                holder=req.holder,
                kind=req.kind,
                target=req.target,
                epoch=self._state.epoch,
                started_at=workflow.now(),
            )
            workflow.logger.info(
                "%s admitted at epoch %d", req.holder, self._state.epoch, extra=self._log()
            )
            self._changed()
        return self._grant(req.holder)

    @begin.validator
    def _validate_begin(self, req: BeginRequest) -> None:
        if not req.holder:
            raise _invalid("begin needs the operation's workflow id")
        active = self._state.operation
        if (active is None or active.holder != req.holder) and (
            problem := begin_problem(self._state, req)
        ):
            raise _invalid(problem, "BadTarget")

    async def _holder_ended(self, active: ActiveOperation) -> bool:
        """True (and the operation dropped) when its workflow no longer runs."""
        try:
            status = await workflow.execute_activity(
                describe_lock_holder,
                HolderQuery(workflow_id=active.holder),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"is {active.holder} still running?",
            )
        except ActivityError:
            return False
        if status.running or self._state.operation != active:
            return self._state.operation is None
        workflow.logger.warning(
            "dropping %s: its workflow is %s", active.holder, status.status, extra=self._log()
        )
        self._state.operation = None
        self._changed()
        return True

    def _grant(self, holder: str) -> Grant:
        return Grant(
            holder=holder,
            epoch=self._state.epoch,
            primary=self._state.primary,
            policy=self._state.policy,
            pending_fences=list(self._state.pending_fences),
            primary_health=self._state.health,
        )

    @workflow.update
    def check_epoch(self, req: EpochCheck) -> EpochCheck:
        """Refuses (`StaleEpoch`) unless `req.holder` runs at the current epoch; answers
        with the request (small: every write step asks)."""
        return req

    @check_epoch.validator
    def _validate_check(self, req: EpochCheck) -> None:
        if problem := stale_epoch(self._state, req.holder, req.epoch):
            raise _invalid(problem, "StaleEpoch")

    @workflow.update
    def set_primary(self, req: SetPrimary) -> AppSummary:
        """The commit point of an operation: the application's writes now go to
        `req.primary`."""
        if self._state.primary != req.primary:
            self._state.primary = req.primary
            self._state.health.down = False
            self._state.health.since = workflow.now()
            self._state.health.reason = f"{req.primary} promoted"
            self._changed()
        return self._state.summary()

    @set_primary.validator
    def _validate_set_primary(self, req: SetPrimary) -> None:
        if problem := stale_epoch(self._state, req.holder, req.epoch):
            raise _invalid(problem, "StaleEpoch")
        if not self._state.policy.has(req.primary):
            raise _invalid(f"{req.primary!r} is not a cluster of {self._state.policy.app}")

    @workflow.update
    def note_fence(self, note: FenceNote) -> AppSummary:
        """A fence pending on a cluster that could not be reached (a failover notes it on
        the primary it is replacing); the watch applies it once that is no longer the
        primary and the cluster answers."""
        fences = self._state.pending_fences
        if note.pending and note.cluster not in fences:
            fences.append(note.cluster)
            self._changed()
        elif not note.pending and note.cluster in fences:
            fences.remove(note.cluster)
            self._changed()
        return self._state.summary()

    @note_fence.validator
    def _validate_fence(self, note: FenceNote) -> None:
        if not self._state.policy.has(note.cluster):
            raise _invalid(f"{note.cluster!r} is not a cluster of {self._state.policy.app}")

    @workflow.update
    def note_health(self, note: HealthNote) -> AppSummary:
        health = self._state.health
        if health.down != note.down:
            health.down, health.since, health.reason = note.down, note.at, note.reason
            health.last_up_at = note.last_up_at or health.last_up_at
            health.last_lsn = note.last_lsn or health.last_lsn
            self._changed()
        return self._state.summary()

    @workflow.update
    def finish(self, req: FinishRequest) -> AppSummary:
        """Ends the operation (idempotent) and keeps its run in the history."""
        active = self._state.operation
        if active is not None and active.holder == req.holder:
            self._state.operation = None
        if not any(r.id == req.run.id and r.epoch == req.run.epoch for r in self._state.runs):
            self._state.runs = [*self._state.runs, req.run][-KEEP_RUNS:]
            if req.run.kind == OpKind.FAILOVER and req.run.outcome == "succeeded":
                self._state.last_failover_at = req.run.finished_at
        self._changed()
        return self._state.summary()

    # --- helpers ------------------------------------------------------------------------

    def _log(self) -> dict[str, str]:
        return {"app": self._state.policy.app, "workflow_id": workflow.info().workflow_id}

    def _changed(self) -> None:
        s = self._state
        s.updated_at = workflow.now()
        running = f"{s.operation.kind} by {s.operation.holder}" if s.operation else "idle"
        fences = f", fence pending on {', '.join(s.pending_fences)}" if s.pending_fences else ""
        down = f", primary DOWN since {s.health.since:%H:%M:%S}" if s.health.down else ""
        workflow.set_current_details(
            f"**{s.policy.app}**: primary {s.primary}, epoch {s.epoch}, {running}{fences}{down}"
        )


@workflow.defn(name="DrGuard")
class DrGuard:
    """Admits automatic failovers fleet-wide: at most `max_automatic` per interval, then
    only with an operator's approval."""

    @workflow.init
    def __init__(self, state: GuardState) -> None:
        self._state = state

    @workflow.run
    async def run(self, state: GuardState) -> GuardState:
        self._details()
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(self._state)

    @workflow.query
    def state(self) -> GuardState:
        return self._state

    @workflow.update
    def admit(self, req: GuardRequest) -> GuardAnswer:
        granted, reason = guard_admit(self._state, req, workflow.now())
        self._details()
        return GuardAnswer(granted=granted, reason=reason)

    def _details(self) -> None:
        s = self._state
        workflow.set_current_details(
            f"{len(s.granted)} of {s.max_automatic} automatic failovers used in the last "
            f"{s.interval_seconds:.0f}s"
        )
