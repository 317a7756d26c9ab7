"""`DrWatch` (`dr-watch:<app>`): the automatic-failover watch of one application.

Each round (`WatchSettings.interval_seconds`) one activity observes the application: its
DR record, the primary's database as the hub sees it, the standby's view of its source,
the external probe through DNS, and it applies any pending fence on a cluster that has
come back (fencing needs no epoch: it only takes writes away). `fleet.dr_rules.decide`
then says whether to fail over: a quorum of independent signals for `failure_rounds`
rounds in a row, a ready standby, no operation running, the cool-down passed. A partition
only the hub sees is one vote and never fails over. The fleet-wide `dr-guard` admits at
most N automatic failovers per window; past that the watch waits for `approve`.

The failover runs as its own top-level workflow (`failover:<app>:auto-...`), so it is
listed, watched and recorded like a manual one. State is one `WatchState`; the watch
continues as new when Temporal suggests it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.dr_observe import fence_when_back, observe_app, start_failover, start_fence
    from activities.dr_records import admit_automatic, note_fence, note_health
    from fleet.dr import (
        ApproveFailover,
        DatabaseState,
        DrRequest,
        FenceNote,
        GuardRequest,
        HealthNote,
        Observation,
        PendingFence,
        StartFailover,
        WatchState,
    )
    from fleet.dr_rules import decide, primary_down
    from workflows.common import INVENTORY_RETRY, INVENTORY_TIMEOUT

OBSERVE_RETRY = RetryPolicy(maximum_attempts=1)
# While waiting for an approval, how often the watch asks the budget again (it may free).
ASK_AGAIN = timedelta(seconds=60)


@workflow.defn(name="DrWatch")
class DrWatch:
    @workflow.init
    def __init__(self, state: WatchState) -> None:
        self._s = state
        # Pending fences this run has started a DrFence for.
        self._fencing: set[str] = set()

    @workflow.query
    def state(self) -> WatchState:
        return self._s

    @workflow.update
    def approve(self, req: ApproveFailover) -> WatchState:
        """An operator admits the failover the watch is waiting for (past the budget)."""
        self._s.approved_by = req.who or "operator"
        return self._s

    @approve.validator
    def _validate_approve(self, req: ApproveFailover) -> None:
        if not self._s.awaiting_approval:
            raise ApplicationError(
                f"the watch of {self._s.app} awaits no approval",
                type="InvalidRequest",
                non_retryable=True,
            )

    @workflow.run
    async def run(self, state: WatchState) -> WatchState:
        s = self._s
        while not (s.max_rounds and s.rounds >= s.max_rounds):
            interval = await self._round()
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(s)
            await workflow.sleep(timedelta(seconds=interval), summary="next round")
        return s

    async def _round(self) -> float:
        s = self._s
        s.rounds += 1
        try:
            seen: Observation = await workflow.execute_activity(
                observe_app,
                s,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=OBSERVE_RETRY,
            )
        except ActivityError as err:
            s.last_decision = f"could not observe: {err.cause or err}"
            self._details()
            return 5.0
        await self._fences(seen)
        signals, settings = seen.signals, seen.settings
        down = primary_down(signals, settings)
        s.consecutive_down = s.consecutive_down + 1 if down else 0
        if not down and signals.hub_ok:
            s.last_up_at, s.last_lsn = signals.at, signals.primary_lsn or s.last_lsn
        if down != seen.health_down:
            note = HealthNote(
                app=s.app,
                down=down,
                at=signals.at,
                last_up_at=s.last_up_at,
                last_lsn=s.last_lsn,
                reason=signals.reason,
            )
            await self._inventory(note_health, note)
        s.last_signals = signals
        decision = decide(
            signals=signals,
            consecutive_down=s.consecutive_down,
            settings=settings,
            automatic=seen.automatic,
            operation_running=seen.operation_running,
            # The cool-down also follows the watch's own last attempt (which may have failed).
            last_failover_at=max(
                (t for t in (seen.last_failover_at, s.started_at) if t is not None),
                default=None,
            ),
        )
        s.last_decision = decision.reason
        if not down and s.awaiting_approval:  # the primary came back: nothing to approve
            s.awaiting_approval, s.approved_by = False, ""
        if decision.failover:
            await self._fail_over(seen)
        self._details()
        return settings.interval_seconds

    async def _fences(self, seen: Observation) -> None:
        """Makes sure a DrFence runs for every pending fence (the failover that left it
        pending started one already; starting is idempotent)."""
        pending_now = {p.cluster for p in seen.pending}
        self._fencing &= pending_now
        for pending in seen.pending:
            if pending.cluster not in self._fencing:
                await self._inventory(start_fence, pending)
                self._fencing.add(pending.cluster)

    async def _fail_over(self, seen: Observation) -> None:
        s = self._s
        now = workflow.now()
        if (
            s.awaiting_approval
            and not s.approved_by
            and s.asked_at is not None
            and now - s.asked_at < ASK_AGAIN
        ):
            s.last_decision = "failover needs approval (`flotilla dr approve`)"
            return
        s.asked_at = now
        answer = await workflow.execute_activity(
            admit_automatic,
            GuardRequest(app=s.app, approved_by=s.approved_by),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
        if not answer.granted:
            s.awaiting_approval = True
            s.last_decision = f"failover needs approval: {answer.reason}"
            return
        s.awaiting_approval, s.approved_by = False, ""
        workflow_id = f"failover:{s.app}:auto-{workflow.now():%Y%m%d-%H%M%S}"
        request = DrRequest(
            app=s.app,
            target=seen.standby,
            automatic=True,
            who="dr-watch",
            reason=s.last_decision,
            down_since=s.last_up_at,
        )
        await workflow.execute_activity(
            start_failover,
            StartFailover(workflow_id=workflow_id, request=request),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
        s.last_started, s.started_at, s.consecutive_down = workflow_id, workflow.now(), 0
        s.last_decision = f"started {workflow_id}: {answer.reason}"

    async def _inventory(self, activity: object, arg: object) -> None:
        await workflow.execute_activity(
            activity,  # type: ignore[arg-type]
            arg,
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )

    def _details(self) -> None:
        s = self._s
        sig = s.last_signals
        seen = "no round yet"
        if sig:
            seen = f"hub {_word(sig.hub_ok)}, standby {_word(sig.standby_ok)}, "
            seen += f"client {_word(sig.client_ok)}"
        waiting = " **awaiting approval** (`flotilla dr approve`)" if s.awaiting_approval else ""
        workflow.set_current_details(
            f"**{s.app}** round {s.rounds}: {seen}; {s.last_decision}{waiting}"
        )


def _word(ok: bool | None) -> str:
    return "?" if ok is None else ("up" if ok else "DOWN")


@workflow.defn(name="DrFence")
class DrFence:
    """`dr-fence:<app>:<cluster>`: fences an old primary the moment its cluster answers
    again, then clears its pending fence in the record. Started by the failover that could
    not reach it (at once) and by the watch (for a fence pending in the record)."""

    @workflow.run
    async def run(self, pending: PendingFence) -> DatabaseState:
        workflow.set_current_details(
            f"fence {pending.cluster} ({pending.db.name}) the moment it answers"
        )
        fenced = await workflow.execute_activity(
            fence_when_back,
            pending,
            start_to_close_timeout=timedelta(days=7),
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5)),
            summary=f"fence {pending.cluster} the moment it returns",
        )
        await workflow.execute_activity(
            note_fence,
            FenceNote(app=pending.fencing.app, cluster=pending.cluster, pending=False),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
        )
        workflow.set_current_details(f"**{pending.cluster}** fenced on its return")
        return fenced
