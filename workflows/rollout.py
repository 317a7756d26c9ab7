"""Rollout: the one engine that walks a fixed plan of waves, one child workflow per cluster.

Run `rollout:<kind>:<id>`. Before anything changes, a preflight checks every planned cluster
live (add-on exists, Cluster API versions) and refuses the whole plan on any problem; a dry
run stops there. Then per wave: note clusters that left or joined the fleet (the plan never
changes), start children up to `max_concurrent` (each only inside its maintenance window;
the run waits durably for the next one), count failures against the wave's and the run's
budget (halt when exceeded: no new clusters, in-flight ones finish), check health after the
wave, soak, wait for approval, then continue-as-new carrying all state. A preflight may
also ask for an approval before anything changes (a sync's prune guard): the first wave
then waits for one like any other.

Controls (Updates with validators): pause, resume, approve, skip, abort, rollback. Stopping
never interrupts a running child: each finishes at its own safe point and releases its lock.
Add-on runs undo changed clusters newest first on `rollback` or, with `auto_rollback`, on
halt; Kubernetes runs cannot downgrade and report the version each cluster is on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

from workflows.cluster_access import CHUNK as PREFLIGHT_CHUNK
from workflows.cluster_access import resolve_access
from workflows.common import (
    HEALTH_HEARTBEAT,
    HEALTH_TIMEOUT,
    INVENTORY_RETRY,
    INVENTORY_TIMEOUT,
    KUBE_RETRY,
    operation_attributes,
    root_failure,
)
from workflows.events import emit

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.health import BATCH_CONCURRENCY, check_clusters_health
    from activities.inventory import list_cluster_names
    from fleet import search
    from fleet.access import FOUR_EYES
    from fleet.durations import format_duration
    from fleet.events import EventType
    from fleet.models import ClusterRef, Health, HealthBatch, HealthReport, RecordsQuery
    from fleet.rollout_models import (
        Approval,
        ApproveRequest,
        ClusterAccess,
        ClusterOutcome,
        ClusterProgress,
        ClusterResult,
        ClusterStatus,
        ClusterTask,
        ControlEvent,
        ControlRequest,
        Outcome,
        Plan,
        PlannedCluster,
        PreflightRequest,
        PreflightResult,
        RolloutInput,
        RolloutProgress,
        RolloutReport,
        RunStatus,
        SkipRequest,
        WaveProgress,
        WaveStatus,
        outcome_of,
    )
    from fleet.wave_specs import allowed_failures
    from fleet.windows import Window, parse_window
    from workflows.registry import OPERATIONS

PREFLIGHT_TIMEOUT = timedelta(minutes=10)
HEALTH_CHUNK = 50  # clusters per call of the wave health check
HEALTH_CHUNK_ROUNDS = -(-HEALTH_CHUNK // BATCH_CONCURRENCY)  # readings in a row, at worst
STOPPED = {RunStatus.HALTED, RunStatus.ABORTED}
PENDING = {ClusterStatus.PENDING, ClusterStatus.WAITING}


# Input that fails validation (e.g. max_concurrent 0 from a raw client) fails the run
# instead of its workflow task, which would retry forever.
@workflow.defn(name="Rollout", failure_exception_types=[ValidationError])
class Rollout:
    @workflow.init
    def __init__(self, input: RolloutInput) -> None:
        self._plan = input.plan
        self._spec = input.plan.spec
        self._options = input.plan.spec.options
        self._operation = OPERATIONS.get(self._spec.operation.kind)
        self._p = input.progress or self._initial_progress(input)
        self._by_name = {c.name: c for c in self._p.clusters}
        self._planned = {c.name: c for w in self._plan.waves for c in w.clusters}
        self._wake = 0  # bumped by every control and every finished child
        self._running = 0
        # How each finished child of this run reached its cluster (its lock grant), for
        # the wave health check; never carried across continue-as-new.
        self._reached: dict[str, ClusterAccess] = {}
        # Events queued by handlers and the engine, sent in order by `_send_events`.
        self._outbox: list[tuple[int, EventType, dict[str, str | None]]] = []

    # --- queries and controls -----------------------------------------------------------

    @workflow.query
    def progress(self) -> RolloutProgress:
        return self._p

    @workflow.update
    def pause(self, request: ControlRequest) -> ControlEvent:
        self._p.paused = True
        self._p.status = RunStatus.PAUSED
        self._event(EventType.PAUSED, principal=request.who, detail=request.reason)
        return self._control("pause", request.who, request.reason)

    @pause.validator
    def _validate_pause(self, request: ControlRequest) -> None:
        self._require_active()
        if self._p.paused:
            raise ValueError(f"{self._p.id} is already paused")

    @workflow.update
    def resume(self, request: ControlRequest) -> ControlEvent:
        self._p.paused = False
        self._p.status = RunStatus.RUNNING
        self._event(EventType.RESUMED, principal=request.who, detail=request.reason)
        return self._control("resume", request.who, request.reason)

    @resume.validator
    def _validate_resume(self, request: ControlRequest) -> None:
        self._require_active()
        if not self._p.paused:
            raise ValueError(f"{self._p.id} is not paused")

    @workflow.update
    def approve(self, request: ApproveRequest) -> ControlEvent:
        wave = next(w for w in self._p.waves if w.status == WaveStatus.AWAITING_APPROVAL)
        # The validator admitted only the waiting wave's name.
        self._p.approvals.append(
            Approval(wave=wave.index, who=request.who, note=request.note, at=workflow.now())
        )
        self._event(
            EventType.WAVE_APPROVED, wave=wave.name, principal=request.who, detail=request.note
        )
        return self._control("approve", request.who, f"wave {wave.name}: {request.note}")

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:
        self._require_active()
        if not request.who:
            raise ValueError("an approval must say who approves")
        waiting = next((w for w in self._p.waves if w.status == WaveStatus.AWAITING_APPROVAL), None)
        if waiting is None:
            raise ValueError(f"{self._p.id} is not waiting for an approval")
        if self._spec.four_eyes and request.who == self._spec.started_by:
            raise ValueError(
                f"{FOUR_EYES}: {request.who} started {self._p.id} and cannot approve its "
                "waves; another approver must"
            )
        if request.wave != waiting.name:
            raise ValueError(
                f"{self._p.id} waits for approval of wave {waiting.name!r}, "
                f"not {request.wave!r}; an approval admits only the wave it names"
            )

    @workflow.update
    def skip(self, request: SkipRequest) -> ControlEvent:
        cluster = self._by_name[request.cluster]
        cluster.status = ClusterStatus.SKIPPED
        cluster.reason = f"skipped by {request.who or 'an operator'}: {request.reason}".rstrip(": ")
        return self._control("skip", request.who, f"{request.cluster}: {request.reason}")

    @skip.validator
    def _validate_skip(self, request: SkipRequest) -> None:
        self._require_active()
        cluster = self._by_name.get(request.cluster)
        if cluster is None:
            raise ValueError(f"{request.cluster} is not part of {self._p.id}")
        if cluster.status not in PENDING:
            raise ValueError(
                f"{request.cluster} is {cluster.status.value}; only clusters not yet started "
                "can be skipped"
            )

    @workflow.update
    def abort(self, request: ControlRequest) -> ControlEvent:
        self._stop(
            RunStatus.ABORTED, f"aborted by {request.who or 'an operator'}: {request.reason}"
        )
        return self._control("abort", request.who, request.reason)

    @abort.validator
    def _validate_abort(self, request: ControlRequest) -> None:
        self._require_active()

    @workflow.update
    def rollback(self, request: ControlRequest) -> ControlEvent:
        self._p.rollback_requested = True
        who = request.who or "an operator"
        self._stop(RunStatus.ABORTED, f"rollback requested by {who}: {request.reason}")
        return self._control("rollback", request.who, request.reason)

    @rollback.validator
    def _validate_rollback(self, request: ControlRequest) -> None:
        self._require_active()
        if not self._spec.operation.undoable:
            raise ValueError(f"{self._spec.operation.describe()} cannot be undone; abort instead")

    def _require_active(self) -> None:
        if self._p.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
            raise ValueError(f"{self._p.id} is {self._p.status.value}; no controls apply")

    def _control(self, action: str, who: str, reason: str) -> ControlEvent:
        event = ControlEvent(action=action, who=who, reason=reason, at=workflow.now())
        self._p.controls.append(event)
        self._wake += 1
        self._details()
        return event

    # --- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: RolloutInput) -> RolloutReport:
        kind = f"rollout:{self._spec.operation.kind}"
        operation_attributes(kind, self._plan.cluster_names())
        if problem := input_problem(self._plan):
            raise ApplicationError(f"plan refused: {problem}", type="BadInput", non_retryable=True)
        self._details()
        sender = asyncio.create_task(self._send_events())
        if input.progress is None:
            self._p.started_at = workflow.now()
            self._event(EventType.STARTED, detail=self._p.target)
            try:
                await self._preflight()
            except ApplicationError as err:
                self._event(EventType.FINISHED, outcome=Outcome.FAILED.value, detail=err.message)
                await self._events_sent()
                raise
        while self._p.status not in STOPPED and self._p.current_wave < len(self._p.waves):
            index = self._p.current_wave
            await self._run_wave(index)
            if self._p.status in STOPPED or index + 1 == len(self._p.waves):
                break
            await self._between_waves(index)
            if self._p.status in STOPPED:
                break
            self._p.current_wave = index + 1
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._events_sent()
            workflow.continue_as_new(RolloutInput(plan=self._plan, progress=self._p))
        report = await self._finish()
        await self._events_sent()
        sender.cancel()
        return report

    async def _preflight(self) -> None:
        if self._operation.preflight is None:
            return
        self._details("preflight: checking every planned cluster")
        checked = await preflight_problems(self._plan, self._operation.preflight)
        if checked.problems:
            listed = "; ".join(f"{name}: {text}" for name, text in sorted(checked.problems.items()))
            raise ApplicationError(
                f"plan refused, nothing was changed: {listed}",
                type="PlanRefused",
                non_retryable=True,
            )
        if checked.asks:
            await self._ask(checked.asks)

    async def _ask(self, asks: dict[str, str]) -> None:
        """The preflight asked for an approval (e.g. a sync's prune guard): the first wave
        waits for one, as `approve_between` waves do, within `approval_timeout`."""
        self._p.asks = dict(sorted(asks.items()))
        first = self._p.waves[0]
        first.status = WaveStatus.AWAITING_APPROVAL
        self._details()
        await self._wait_for(
            lambda: any(a.wave == first.index for a in self._p.approvals),
            f"approval of wave {first.name} ({self._asked()})",
        )
        if self._p.status not in STOPPED:
            first.status = WaveStatus.PENDING

    async def _run_wave(self, index: int) -> None:
        wave = self._p.waves[index]
        wave.status = WaveStatus.RUNNING
        if wave.started_at is None:
            wave.started_at = workflow.now()
            self._event(
                EventType.WAVE_STARTED,
                wave=wave.name,
                detail=f"wave {wave.index + 1}/{len(self._p.waves)}: {len(wave.clusters)} clusters",
            )
        await self._note_membership(wave)
        tasks: list[asyncio.Task[None]] = []
        while True:
            pending = [
                self._by_name[n] for n in wave.clusters if self._by_name[n].status in PENDING
            ]
            if self._p.status in STOPPED:
                break
            wait_seconds = None
            if not self._p.paused:
                wait_seconds = self._launch(pending, tasks)
            pending = [c for c in pending if c.status in PENDING]
            if not pending and not self._running:
                break
            self._details()
            idle_on_window = wait_seconds is not None and not self._running
            await self._next_change(window_wait=wait_seconds if idle_on_window else None)
        while self._running:  # halted or aborted: in-flight children reach their end
            await self._next_change()
        await asyncio.gather(*tasks)
        for name in wave.clusters:
            cluster = self._by_name[name]
            if cluster.status in PENDING:
                cluster.status = ClusterStatus.NOT_STARTED
                cluster.to_version = cluster.from_version
        if self._p.status not in STOPPED and self._options.health_gates:
            await self._check_wave(wave)
        wave.status = WaveStatus.HALTED if self._p.status in STOPPED else WaveStatus.DONE
        wave.finished_at = workflow.now()
        self._details()

    async def _next_change(self, *, window_wait: float | None = None) -> None:
        """Waits for a control or a finished child, or `window_wait` seconds (a window opens)."""
        seen = self._wake
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._wake != seen,
                timeout=window_wait,
                timeout_summary="waiting for a maintenance window",
            )

    def _launch(
        self, pending: list[ClusterProgress], tasks: list[asyncio.Task[None]]
    ) -> float | None:
        """Starts pending clusters whose window is open, up to the concurrency limit.
        Returns seconds until the next window opens for a cluster left waiting, or None."""
        now = workflow.now()
        next_open: float | None = None
        for cluster in pending:
            if self._running >= self._options.max_concurrent:
                break
            window = self._window(self._planned[cluster.name])
            if window is not None and not window.is_open(now):
                cluster.status = ClusterStatus.WAITING
                opens_in = window.seconds_until_open(now)
                cluster.reason = f"maintenance window opens in {opens_in / 60:.0f} min"
                next_open = opens_in if next_open is None else min(next_open, opens_in)
                continue
            cluster.status = ClusterStatus.RUNNING
            cluster.reason = ""
            cluster.started_at = now
            self._running += 1
            tasks.append(asyncio.create_task(self._run_cluster(cluster)))
        return next_open

    def _window(self, cluster: PlannedCluster) -> Window | None:
        text = cluster.window or self._options.window
        return parse_window(text) if text else None

    async def _run_cluster(self, cluster: ClusterProgress, *, rollback: bool = False) -> None:
        planned = self._planned[cluster.name]
        operation = self._spec.operation
        if rollback:
            operation = operation.undo(cluster.from_version)
        task = ClusterTask(
            rollout_id=self._p.id,
            cluster=planned,
            operation=operation,
            health_gates=self._options.health_gates,
            timeout_seconds=self._spec.cluster_timeout,
            settle_seconds=self._options.settle,
            rollback=rollback,
            approved_by=self._asks_approved_by(),
        )
        suffix = "/rollback" if rollback else ""
        try:
            result = await workflow.execute_child_workflow(
                self._operation.child.run,
                task,
                id=f"{self._p.id}/{cluster.name}{suffix}",
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                static_summary=f"{'undo: ' if rollback else ''}{operation.describe()}"
                f" on {cluster.name}",
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(search.KIND, f"rollout:{operation.kind}/cluster"),
                        SearchAttributePair(search.CLUSTERS, [cluster.name]),
                    ]
                ),
            )
        except ChildWorkflowError as err:
            result = result_of_failure(cluster.name, err)
        finally:
            self._running -= 1
            self._wake += 1
        if result.access is not None:
            self._reached[cluster.name] = result.access
        if rollback:
            ok = result.status in (ClusterStatus.SUCCEEDED, ClusterStatus.UNCHANGED)
            cluster.status = ClusterStatus.ROLLED_BACK if ok else ClusterStatus.ROLLBACK_FAILED
            cluster.reason = "" if ok else result.reason
            cluster.to_version = result.to_version
        else:
            self._record(cluster, result)

    def _asks_approved_by(self) -> str:
        if not self._p.asks:
            return ""
        return next((a.who for a in self._p.approvals if a.wave == 0), "")

    def _record(self, cluster: ClusterProgress, result: ClusterResult) -> None:
        cluster.finished_at = workflow.now()
        cluster.status = result.status
        if cluster.started_at is not None:
            # `flotilla_cluster_duration_seconds` on the worker's /metrics (the SDK's
            # workflow meter: exported with the SDK's metrics, never recorded on replay).
            workflow.metric_meter().create_histogram_timedelta(
                "flotilla_cluster_duration",
                "Time one cluster took in a rollout, by operation kind and status.",
                "duration",
            ).record(
                cluster.finished_at - cluster.started_at,
                {"kind": self._spec.operation.kind, "status": result.status.value},
            )
        cluster.reason = result.reason
        cluster.changed = result.changed
        cluster.from_version = result.from_version or cluster.from_version
        cluster.to_version = result.to_version
        if result.status == ClusterStatus.UNREACHABLE:
            if self._options.skip_unreachable:
                cluster.reason = f"skipped: {result.reason}"
                return
            cluster.status = ClusterStatus.FAILED
            cluster.reason = f"unreachable: {result.reason}"
        if cluster.status == ClusterStatus.FAILED:
            self._count_failure(cluster)

    def _count_failure(self, cluster: ClusterProgress) -> None:
        wave = self._p.waves[cluster.wave]
        wave.failures += 1
        self._p.failures += 1
        run_allowed = allowed_failures(self._options.failure_budget, len(self._p.clusters))
        wave_allowed = allowed_failures(self._options.wave_failure_budget, len(wave.clusters))
        if run_allowed is not None and self._p.failures > run_allowed:
            why = f"{self._p.failures} failures exceed the run's budget of {run_allowed}"
        elif wave_allowed is not None and wave.failures > wave_allowed:
            why = f"{wave.failures} failures exceed wave {wave.name}'s budget of {wave_allowed}"
        else:
            return
        self._stop(RunStatus.HALTED, f"halted: {why} (last: {cluster.name}: {cluster.reason})")

    def _stop(self, status: RunStatus, reason: str) -> None:
        if self._p.status in STOPPED:
            return
        self._p.status = status
        self._p.paused = False
        self._p.halt_reason = reason
        stopped = EventType.HALTED if status == RunStatus.HALTED else EventType.ABORTED
        self._event(stopped, detail=reason)
        self._wake += 1
        self._details()

    async def _note_membership(self, wave: WaveProgress) -> None:
        """Planned clusters gone from the inventory are skipped; new matches are noted."""
        matching = await workflow.execute_activity(
            list_cluster_names,
            RecordsQuery(selector=self._spec.selector),
            start_to_close_timeout=INVENTORY_TIMEOUT,
            retry_policy=INVENTORY_RETRY,
            summary="membership check",
        )
        present = set(matching.names)
        for name in wave.clusters:
            cluster = self._by_name[name]
            if name not in present and cluster.status in PENDING:
                cluster.status = ClusterStatus.SKIPPED
                cluster.reason = "left the fleet (or stopped matching) after planning"
                if name not in self._p.left:
                    self._p.left.append(name)
        for name in sorted(present - set(self._by_name) - set(self._p.joined)):
            self._p.joined.append(name)

    async def _check_wave(self, wave: WaveProgress) -> None:
        """Health after the wave: a changed cluster that is not healthy now fails late."""
        done = [
            self._by_name[n]
            for n in wave.clusters
            if self._by_name[n].status == ClusterStatus.SUCCEEDED
        ]
        if not done:
            return
        wave.status = WaveStatus.CHECKING
        self._details(f"wave {wave.name}: health check of {len(done)} clusters")
        unknown = [c.name for c in done if c.name not in self._reached]
        access = self._reached | (await resolve_access(unknown) if unknown else {})
        refs = [access[c.name].ref() for c in done if c.name in access]
        chunks = [refs[i : i + HEALTH_CHUNK] for i in range(0, len(refs), HEALTH_CHUNK)]
        answers = await asyncio.gather(*(self._health(chunk) for chunk in chunks))
        reports = {r.cluster: r for answer in answers for r in answer}
        for cluster in done:
            report = reports.get(cluster.name) or HealthReport(
                cluster=cluster.name, health=Health.UNKNOWN, reason="no longer in the inventory"
            )
            if report.health != Health.HEALTHY:
                cluster.status = ClusterStatus.FAILED
                cluster.reason = f"{report.health.value} after wave {wave.name}: {report.reason}"
                self._count_failure(cluster)

    async def _health(self, refs: list[ClusterRef]) -> list[HealthReport]:
        """A health reading of each cluster (one activity call); a check that itself fails
        reads as `unknown` (not healthy)."""
        try:
            answer = await workflow.execute_activity(
                check_clusters_health,
                HealthBatch(clusters=refs),
                start_to_close_timeout=HEALTH_TIMEOUT * HEALTH_CHUNK_ROUNDS,
                heartbeat_timeout=HEALTH_HEARTBEAT,
                retry_policy=KUBE_RETRY,
                summary=f"health check {refs[0].name}..{refs[-1].name}",
            )
        except ActivityError as err:
            reason = root_failure(err).message
            return [
                HealthReport(cluster=r.name, health=Health.UNKNOWN, reason=reason) for r in refs
            ]
        return answer.reports

    async def _between_waves(self, index: int) -> None:
        wave, following = self._p.waves[index], self._p.waves[index + 1]
        if self._options.soak:
            wave.status = WaveStatus.SOAKING
            self._details(f"soaking {format_duration(self._options.soak)} after wave {wave.name}")
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._p.status in STOPPED,
                    timeout=self._options.soak,
                    timeout_summary=f"soak after wave {wave.name}",
                )
            wave.status = WaveStatus.DONE
        if self._options.approve_between and self._p.status not in STOPPED:
            following.status = WaveStatus.AWAITING_APPROVAL
            self._details(f"waiting for approval to start wave {following.name}")
            self._event(
                EventType.AWAITING_APPROVAL,
                wave=following.name,
                detail=f"approve wave {following.name} to continue",
            )
            await self._wait_for(
                lambda: any(a.wave == following.index for a in self._p.approvals),
                f"approval of wave {following.name}",
            )
            following.status = WaveStatus.PENDING
        if self._p.paused and self._p.status not in STOPPED:
            self._details()
            await self._wait_for(lambda: not self._p.paused, "a resume")

    async def _wait_for(self, done: Callable[[], bool], what: str) -> None:
        """Waits for `done` (or a stop) at most `approval_timeout`; then halts the run."""
        limit = self._options.approval_timeout
        try:
            await workflow.wait_condition(
                lambda: self._p.status in STOPPED or done(),
                timeout=limit,
                timeout_summary=f"waiting for {what}",
            )
        except TimeoutError:
            self._stop(RunStatus.HALTED, f"halted: no {what} within {format_duration(limit)}")

    async def _finish(self) -> RolloutReport:
        for wave in self._p.waves:
            if wave.status in (WaveStatus.PENDING, WaveStatus.AWAITING_APPROVAL):
                wave.status = WaveStatus.NOT_STARTED
        for cluster in self._p.clusters:
            if cluster.status in PENDING:
                cluster.status = ClusterStatus.NOT_STARTED
                cluster.to_version = cluster.from_version
        undo = self._p.rollback_requested or (
            self._options.auto_rollback and self._p.status == RunStatus.HALTED
        )
        if undo and self._spec.operation.undoable:
            await self._roll_back()
        elif self._p.status not in STOPPED:
            self._p.status = RunStatus.COMPLETED
        self._p.finished_at = workflow.now()
        report = self._report()
        workflow.upsert_search_attributes([search.OUTCOME.value_set(report.outcome.value)])
        self._details()
        self._event(
            EventType.FINISHED,
            outcome=report.outcome.value,
            detail=self._p.halt_reason or self._counts(),
        )
        return report

    async def _roll_back(self) -> None:
        """Undoes changed clusters newest first, `max_concurrent` at a time."""
        changed = [c for c in self._p.clusters if c.changed and c.from_version]
        changed.sort(key=lambda c: c.finished_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        self._p.status = RunStatus.ROLLING_BACK
        size = self._options.max_concurrent
        for i in range(0, len(changed), size):
            batch = changed[i : i + size]
            self._details(f"rolling back {', '.join(c.name for c in batch)}")
            self._running += len(batch)
            await asyncio.gather(*(self._run_cluster(c, rollback=True) for c in batch))
        failed = [c.name for c in changed if c.status == ClusterStatus.ROLLBACK_FAILED]
        self._p.status = RunStatus.ROLLED_BACK
        if failed:
            self._p.halt_reason += f"; rollback failed on {', '.join(failed)}"

    # --- events ---------------------------------------------------------------------------

    def _event(self, event_type: EventType, **fields: str | None) -> None:
        """Queues an event (handlers cannot await); `_send_events` emits the queue in order.
        `principal` defaults to who started the run."""
        self._p.events += 1
        self._outbox.append((self._p.events, event_type, fields))

    async def _send_events(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._outbox))
            seq, event_type, fields = self._outbox[0]
            await emit(
                event_type,
                seq=seq,
                operation=self._spec.operation.kind,
                change=self._spec.change,
                principal=fields.get("principal") or self._spec.started_by,
                wave=fields.get("wave"),
                outcome=fields.get("outcome"),
                detail=fields.get("detail") or "",
            )
            self._outbox.pop(0)

    async def _events_sent(self) -> None:
        await workflow.wait_condition(lambda: not self._outbox)

    def _counts(self) -> str:
        counts: dict[str, int] = {}
        for cluster in self._p.clusters:
            counts[cluster.status.value] = counts.get(cluster.status.value, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))

    # --- reporting ----------------------------------------------------------------------

    def _asked(self) -> str:
        """The first cluster asking for an approval and why, and how many others ask."""
        (name, why), others = next(iter(self._p.asks.items())), len(self._p.asks) - 1
        return f"{name}: {why}" + (f" (+{others} clusters)" if others else "")

    def _details(self, line: str = "") -> None:
        """The UI's details: what the run changes, where it is, and its outcome so far.
        Set at the start of every run, so it survives continue-as-new."""
        p = self._p
        if not line and p.asks and p.waves[0].status == WaveStatus.AWAITING_APPROVAL:
            line = f"waiting for approval to start wave {p.waves[0].name}: {self._asked()}"
        wave = p.waves[min(p.current_wave, len(p.waves) - 1)]
        counts: dict[str, int] = {}
        for name in wave.clusters:
            status = self._by_name[name].status.value
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        outcome = outcome_of(p.status, [c.status for c in p.clusters])
        head = f"{outcome.value}{' (paused)' if p.paused else ''}: {p.target} on "
        head += f"{len(p.clusters)} clusters; wave {wave.index + 1}/{len(p.waves)} {wave.name}: "
        head += f"{summary}; failures {p.failures}"
        if p.halt_reason:
            head += f"; {p.halt_reason}"
        workflow.set_current_details(f"{head}\n{line}" if line else head)

    def _report(self) -> RolloutReport:
        p = self._p
        outcomes = [
            ClusterOutcome(
                name=c.name,
                wave=p.waves[c.wave].name,
                status=c.status,
                reason=c.reason,
                from_version=c.from_version,
                to_version=c.to_version,
                started_at=c.started_at,
                duration_seconds=(c.finished_at - c.started_at).total_seconds()
                if c.finished_at and c.started_at
                else None,
            )
            for c in p.clusters
        ]
        return RolloutReport(
            id=p.id,
            kind=p.kind,
            target=p.target,
            status=p.status,
            outcome=outcome_of(p.status, [c.status for c in p.clusters]),
            halt_reason=p.halt_reason,
            outcomes=outcomes,
            approvals=p.approvals,
            controls=p.controls,
            left=p.left,
            joined=p.joined,
            notes=self._plan.notes,
            started_at=p.started_at,
            finished_at=p.finished_at,
        )

    @staticmethod
    def _initial_progress(input: RolloutInput) -> RolloutProgress:
        plan = input.plan
        return RolloutProgress(
            id=plan.spec.workflow_id,
            kind=plan.spec.operation.kind,
            target=plan.spec.operation.describe(),
            waves=[
                WaveProgress(
                    index=i, name=w.name, text=w.text, clusters=[c.name for c in w.clusters]
                )
                for i, w in enumerate(plan.waves)
            ],
            clusters=[
                ClusterProgress(name=c.name, wave=i, from_version=c.version, to_version=c.version)
                for i, w in enumerate(plan.waves)
                for c in w.clusters
            ],
        )


def input_problem(plan: Plan) -> str:
    """What the planner would refuse, checked again for plans from any client (a raw
    Temporal client can send anything the models accept)."""
    if not plan.waves:
        return "the plan has no waves; nothing to roll out"
    if empty := [w.name for w in plan.waves if not w.clusters]:
        return f"wave {empty[0]!r} has no clusters"
    names = plan.cluster_names()
    if len(set(names)) != len(names):
        return "a cluster is planned twice"
    for cluster in (c for w in plan.waves for c in w.clusters):
        if text := cluster.window:
            try:
                parse_window(text)
            except ValueError as exc:
                return f"{cluster.name}: {exc}"
    return ""


async def preflight_problems(
    plan: Plan, preflight: Callable[[PreflightRequest], PreflightResult]
) -> PreflightResult:
    """Runs `preflight` over every planned cluster in chunks: the problems (cluster ->
    problem) and asks found. A planned cluster with no active record is a problem too."""
    names = plan.cluster_names()
    access = await resolve_access(names)
    problems = {n: "not in the inventory (offboarded?)" for n in names if n not in access}
    clusters = [access[n] for n in names if n in access]
    chunks = [clusters[i : i + PREFLIGHT_CHUNK] for i in range(0, len(clusters), PREFLIGHT_CHUNK)]
    try:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(
                    preflight,
                    PreflightRequest(clusters=chunk, operation=plan.spec.operation),
                    start_to_close_timeout=PREFLIGHT_TIMEOUT,
                    heartbeat_timeout=timedelta(seconds=60),
                    retry_policy=INVENTORY_RETRY,
                    summary=f"preflight {chunk[0].name}..{chunk[-1].name}",
                )
                for chunk in chunks
            )
        )
    except ActivityError as err:
        raise ApplicationError(
            f"preflight could not run: {root_failure(err).message}",
            type="PreflightFailed",
            non_retryable=True,
        ) from None
    return PreflightResult(
        problems=problems | {name: text for r in results for name, text in r.problems.items()},
        asks={name: text for r in results for name, text in r.asks.items()},
    )


def result_of_failure(cluster: str, err: ChildWorkflowError) -> ClusterResult:
    """The child's own `ClusterResult` when it failed deliberately, else a generic failure."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == "ClusterFailed" and cause.details:
        return ClusterResult.model_validate(cause.details[0])
    return ClusterResult(
        cluster=cluster, status=ClusterStatus.FAILED, reason=str(cause or err), changed=True
    )
