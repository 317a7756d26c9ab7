"""The DR operations of one application: `Switchover` (planned), `Failover` (unplanned),
`Failback` (home again) and `Drill` (switchover there and back, measured).

Each run is admitted by the application's `dr-app:<name>` entity, which gives it a new
fencing epoch (workflows/dr_app.py); every write step carries that epoch and refuses to act
once it is stale. Each run holds the inventory locks of the clusters it switches (phase
`failing-over`), records every step with its start and end, and ends by handing its
record to the entity (`finish`), also when it fails or is cancelled. Bad input (unknown
application, a cluster outside the policy, another operation running) is refused by the
entity before anything is touched.

Steps, CloudNativePG distributed topology (docs/dr.md):

- switchover S -> T: fence S, demote S (`spec.replica.primary: T`, S publishes a demotion
  token), wait until T has replayed S's last WAL, promote T with the token, commit T as
  the primary, point DNS at T, verify a write on T, lift S's fence (S now follows T).
- failover S -> T: fence S if it answers (else the fence stays pending: the watch applies
  it the moment S returns), promote T without a token, commit, DNS, verify; RPO is the WAL
  T had not replayed from S's last known position, RTO from S's last good moment.
- failback (to the home cluster H from P): fence H, rebuild H as a replica of P, lift its
  fence, wait until it has caught up, then switch over P -> H.
- drill: switchover P -> T and T -> P, reporting both measurements.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.database import (
        demote_database,
        fence_database,
        promote_database,
        read_database,
        rebuild_replica,
        wait_database,
    )
    from activities.dns import set_dns_target
    from activities.dr_observe import start_fence, watch_view
    from activities.dr_probe import wait_writable
    from activities.dr_records import (
        begin_operation,
        finish_operation,
        note_fence,
        read_app,
        set_primary,
    )
    from activities.inventory import acquire_cluster_lock, release_cluster_lock, resolve_clusters
    from fleet import search
    from fleet.dr import (
        AppRef,
        BeginRequest,
        DatabaseRef,
        DatabaseState,
        DatabaseWait,
        DatabaseWrite,
        DnsWrite,
        DrOutcome,
        DrProgress,
        DrRequest,
        DrResult,
        FenceNote,
        Fencing,
        FinishRequest,
        Grant,
        Measurement,
        OpKind,
        PendingFence,
        ProbeRequest,
        RunRecord,
        SetPrimary,
        StepRecord,
        WaitUntil,
    )
    from fleet.dr_rules import default_target, lsn_gap, parse_lsn, rto_seconds
    from fleet.events import EventType
    from fleet.models import ClusterRef, LockRelease, LockRequest, Phase
    from fleet.rollout_models import ClusterNames
    from workflows.common import INVENTORY_RETRY, root_failure
    from workflows.events import emit

T = TypeVar("T")

KUBE = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
)
# Every DR activity heartbeats at least every second, so a worker that dies mid-step is
# noticed in HEARTBEAT and the step resumes on another worker (a failover must not wait
# out a start-to-close timeout).
HEARTBEAT = timedelta(seconds=3)
WRITE_TIMEOUT = timedelta(seconds=30)
RECORD_TIMEOUT = timedelta(seconds=20)
# The inventory's lock calls do not heartbeat when they answer at once: a short limit.
LOCK_TIMEOUT = timedelta(seconds=8)
READ_HEARTBEAT = timedelta(seconds=8)
# Fencing a primary that may be dark: two quick tries, then the fence stays pending.
REACH_TIMEOUT = timedelta(seconds=8)
REACH_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_attempts=2)


class StepFailed(Exception):
    """Ends the run as failed with `reason` (after cleanup)."""


class DrRun:
    """The skeleton of every DR run: admission, locks, timestamped steps, cleanup and the
    record. Subclasses are `@workflow.defn` classes with `kind` and `steps`."""

    kind: ClassVar[OpKind]

    def __init__(self) -> None:
        self._p = DrProgress(id="", app="", kind=self.kind)
        self._grant: Grant | None = None
        self._refs: dict[str, ClusterRef] = {}
        self._locked: list[str] = []

    @workflow.query
    def progress(self) -> DrProgress:
        return self._p

    @property
    def grant(self) -> Grant:
        assert self._grant is not None
        return self._grant

    @property
    def fencing(self) -> Fencing:
        return Fencing(app=self._p.app, holder=workflow.info().workflow_id, epoch=self._p.epoch)

    # --- the run ------------------------------------------------------------------------

    async def execute(self, req: DrRequest) -> DrResult:
        p = self._p
        p.id, p.app, p.started_at = workflow.info().workflow_id, req.app, workflow.now()
        workflow.upsert_search_attributes(
            [search.KIND.value_set(self.kind.search_kind), search.OUTCOME.value_set("running")]
        )
        self._details(f"admission by {req.app}'s DR record")
        try:
            await self._admit(req)  # a refusal fails the run before anything is touched
        except ApplicationError as err:
            await self._emit(req, EventType.FAILOVER_FINISHED, f"refused: {err.message}")
            raise
        await self._emit(req, EventType.FAILOVER_STARTED, f"{p.source} -> {p.target}")
        failure: BaseException | None = None
        try:
            await self._lock([p.source, p.target])
            await self.steps(req)
            p.outcome = DrOutcome.SUCCEEDED
        except BaseException as exc:
            failure = exc
            cancelled = is_cancelled_exception(exc)
            p.outcome = DrOutcome.ABORTED if cancelled else DrOutcome.FAILED
            if isinstance(exc, StepFailed):
                p.reason = str(exc)
            elif isinstance(exc, ActivityError | ApplicationError) and not cancelled:
                p.reason = root_failure(exc).message
            else:
                p.reason = "cancelled" if cancelled else f"{type(exc).__name__}: {exc}"
        await self._cleanup(req)
        await self._emit(req, EventType.FAILOVER_FINISHED, p.reason or f"{p.target} is primary")
        if failure is not None:
            if is_cancelled_exception(failure):
                raise failure
            raise ApplicationError(p.reason, type="DrFailed", non_retryable=True)
        return DrResult(progress=p)

    async def steps(self, req: DrRequest) -> None:
        raise NotImplementedError

    async def _emit(self, req: DrRequest, event_type: EventType, detail: str) -> None:
        self._p.events += 1
        await emit(
            event_type,
            seq=self._p.events,
            operation=self.kind.search_kind,
            principal=req.who,
            change=req.change,
            outcome=None if event_type == EventType.FAILOVER_STARTED else self._p.outcome.value,
            detail=detail,
        )

    async def _admit(self, req: DrRequest) -> None:
        p = self._p
        target = req.target
        try:
            if not target:
                state = await self._call(read_app, AppRef(app=req.app), limit=RECORD_TIMEOUT)
                target = default_target(state, self.kind)
            begin = BeginRequest(
                app=req.app,
                holder=p.id,
                kind=self.kind,
                target=target,
                require_not_primary=self.kind != OpKind.DRILL,
            )
            self._grant = await workflow.execute_activity(
                begin_operation,
                begin,
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=INVENTORY_RETRY,
                summary=f"admit {self.kind} of {req.app} to {target}",
            )
        except ActivityError as err:
            failure = root_failure(err)
            p.outcome, p.reason, p.finished_at = DrOutcome.FAILED, failure.message, workflow.now()
            workflow.upsert_search_attributes([search.OUTCOME.value_set(p.outcome.value)])
            self._details(f"refused: {failure.message}")
            raise failure from None
        p.epoch, p.source = self.grant.epoch, self.grant.primary
        p.target = target if self.kind != OpKind.DRILL else self._drill_target(target)
        workflow.upsert_search_attributes([search.CLUSTERS.value_set([p.source, p.target])])

    def _drill_target(self, target: str) -> str:
        if target != self.grant.primary:
            return target
        others = [m.cluster for m in self.grant.policy.members if m.cluster != target]
        return others[0]

    async def _lock(self, clusters: list[str]) -> None:
        for cluster in dict.fromkeys(clusters):
            await self.step(f"lock {cluster}", lambda c=cluster: self._lock_one(c))  # type: ignore[misc]

    async def _lock_one(self, cluster: str) -> str:
        grant = await self._call(
            acquire_cluster_lock,
            LockRequest(
                cluster=cluster,
                holder=self._p.id,
                operation=f"dr-{self.kind}",
                phase=Phase.FAILING_OVER,
            ),
            limit=LOCK_TIMEOUT,
            heartbeat=None,
            retry=INVENTORY_RETRY,
        )
        self._locked.append(cluster)
        if grant.credential is None:
            raise StepFailed(f"the inventory record of {cluster} has no credential reference")
        self._refs[cluster] = ClusterRef(name=cluster, credential=grant.credential)
        return "held"

    async def _cleanup(self, req: DrRequest) -> None:
        """Releases the locks and hands the run to the record; runs after any ending."""
        p = self._p
        for cluster in reversed(self._locked):
            try:
                await workflow.execute_activity(
                    release_cluster_lock,
                    LockRelease(cluster=cluster, holder=p.id, phase=None),
                    start_to_close_timeout=LOCK_TIMEOUT,
                    retry_policy=INVENTORY_RETRY,
                    summary=f"release {cluster}",
                )
            except ActivityError:
                workflow.logger.exception("could not release", extra={"cluster": cluster})
        p.finished_at = workflow.now()
        run = RunRecord(
            id=p.id,
            kind=self.kind,
            source=p.source,
            target=p.target,
            epoch=p.epoch,
            outcome=p.outcome,
            reason=p.reason,
            automatic=req.automatic,
            started_at=p.started_at or p.finished_at,
            finished_at=p.finished_at,
            steps=p.steps,
            measurements=p.measurements,
        )
        try:
            await workflow.execute_activity(
                finish_operation,
                FinishRequest(app=p.app, holder=p.id, run=run),
                start_to_close_timeout=RECORD_TIMEOUT,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=INVENTORY_RETRY,
                summary="hand the run to the DR record",
            )
        except ActivityError:
            workflow.logger.exception("could not record the run", extra={"app": p.app})
        workflow.upsert_search_attributes([search.OUTCOME.value_set(p.outcome.value)])
        self._details(p.reason)

    # --- steps --------------------------------------------------------------------------

    async def step(self, name: str, action: Callable[[], Awaitable[str | None]]) -> None:
        """Runs one step, timestamped in the progress; `action` returns a detail line."""
        record = StepRecord(name=name, started_at=workflow.now())
        self._p.steps.append(record)
        self._details()
        try:
            detail = await action()
        except BaseException as exc:
            record.ok, record.finished_at = False, workflow.now()
            if isinstance(exc, ActivityError) and not is_cancelled_exception(exc):
                record.detail = root_failure(exc).message
                raise StepFailed(f"{name}: {record.detail}") from None
            record.detail = str(exc)
            raise
        record.ok, record.finished_at, record.detail = True, workflow.now(), detail or ""

    async def _call(
        self,
        activity: Callable[..., Any],
        arg: Any,
        *,
        limit: timedelta = WRITE_TIMEOUT,
        retry: RetryPolicy = KUBE,
        heartbeat: timedelta | None = HEARTBEAT,
    ) -> Any:
        return await workflow.execute_activity(
            activity,
            arg,
            start_to_close_timeout=limit,
            heartbeat_timeout=heartbeat,
            retry_policy=retry,
        )

    def db(self, cluster: str) -> DatabaseRef:
        member = self.grant.policy.member(cluster)
        return DatabaseRef(
            cluster=self._refs[cluster],
            namespace=self.grant.policy.namespace,
            name=member.database,
            host=member.endpoint,
        )

    def name(self, cluster: str) -> str:
        """The CloudNativePG Cluster of `cluster` (what `spec.replica` fields name)."""
        return self.grant.policy.member(cluster).database

    async def read(self, cluster: str) -> DatabaseState:
        state: DatabaseState = await self._call(
            read_database, self.db(cluster), heartbeat=READ_HEARTBEAT
        )
        return state

    async def write(
        self, activity: Callable[..., Any], cluster: str, **fields: Any
    ) -> DatabaseState:
        request = DatabaseWrite(db=self.db(cluster), fencing=self.fencing, **fields)
        state: DatabaseState = await self._call(activity, request)
        return state

    async def wait(
        self, req: DrRequest, cluster: str, until: WaitUntil, lsn: str = ""
    ) -> DatabaseState:
        state: DatabaseState = await self._call(
            wait_database,
            DatabaseWait(
                db=self.db(cluster), until=until, lsn=lsn, timeout_seconds=req.wait_seconds
            ),
            limit=timedelta(seconds=req.wait_seconds + 30),
            heartbeat=HEARTBEAT,
        )
        return state

    # --- shared sequences ---------------------------------------------------------------

    async def commit_and_route(self, req: DrRequest, target: str, m: Measurement) -> None:
        """Records `target` as the primary, points DNS at it and verifies a write there."""
        p = self._p

        async def commit() -> str:
            await self._call(
                set_primary,
                SetPrimary(app=p.app, holder=p.id, epoch=p.epoch, primary=target),
                limit=RECORD_TIMEOUT,
                retry=INVENTORY_RETRY,
            )
            return f"{target} is the primary of {p.app} (epoch {p.epoch})"

        await self.step("commit primary", commit)
        policy = self.grant.policy
        endpoint = policy.member(target).endpoint

        async def route() -> str:
            await self._call(
                set_dns_target, DnsWrite(dns=policy.dns, target=endpoint, fencing=self.fencing)
            )
            return f"{policy.dns.dns_name} -> {endpoint} (TTL {policy.dns.ttl}s)"

        await self.step("switch DNS", route)

        async def verify() -> str:
            url = policy.member(target).probe_url
            if url:
                result = await self._call(
                    wait_writable,
                    ProbeRequest(url=url, timeout_seconds=req.wait_seconds),
                    limit=timedelta(seconds=req.wait_seconds + 30),
                    heartbeat=HEARTBEAT,
                )
                m.writable_at = result.at or workflow.now()
                return f"write accepted at {url} ({result.status})"
            state = await self.wait(req, target, "writable")
            m.writable_at = state.checked_at or workflow.now()
            return f"write acknowledged by {state.name} (timeline {state.timeline})"

        await self.step("verify writes", verify)
        m.rto_seconds = rto_seconds(m.down_since, m.writable_at)

    async def switchover(self, req: DrRequest, source: str, target: str) -> Measurement:
        """Planned: no acknowledged write is lost (the target replays the source's last
        WAL, named by the demotion token, before it is promoted)."""
        m = Measurement()
        self._p.measurements.append(m)

        async def preflight() -> str:
            before = await self.read(source)
            after = await self.read(target)
            if not before.reachable or not before.is_primary:
                raise StepFailed(f"{source} is not a reachable primary ({before.reason})")
            if not after.reachable or not after.ready or after.is_primary:
                raise StepFailed(f"{target} is not a ready replica ({after.reason})")
            if after.lag_seconds is not None and after.lag_seconds > req.max_lag_seconds:
                raise StepFailed(
                    f"{target} lags {after.lag_seconds:.1f}s, more than {req.max_lag_seconds}s"
                )
            return f"{target} replica lag {after.lag_seconds}s"

        await self.step(f"preflight {source} -> {target}", preflight)

        async def fence() -> str:
            await self.write(fence_database, source, fence=True)
            m.down_since = workflow.now()
            return f"{source} takes no writes"

        await self.step(f"fence {source}", fence)

        token = ""
        final_lsn = ""

        async def demote() -> str:
            nonlocal token, final_lsn
            new = self.name(target)
            await self.write(demote_database, source, primary=new, source=new)
            demoted = await self.wait(req, source, "demoted")
            token, final_lsn = demoted.demotion_token, demoted.demotion_lsn
            return f"demotion token issued at {final_lsn or '?'}"

        await self.step(f"demote {source}", demote)

        async def catch_up() -> str:
            caught = await self.wait(req, target, "lsn", lsn=final_lsn)
            m.source_lsn, m.target_lsn = final_lsn, caught.replayed_lsn
            m.rpo_bytes = lsn_gap(final_lsn, caught.replayed_lsn)
            m.rpo_seconds = 0.0 if m.rpo_bytes == 0 else None
            return f"{target} replayed {caught.replayed_lsn}"

        await self.step(f"wait for {target} to catch up", catch_up)

        async def promote() -> str:
            await self.write(
                promote_database, target, primary=self.name(target), promotion_token=token
            )
            await self.wait(req, target, "promoted")
            return f"{target} promoted with the demotion token"

        await self.step(f"promote {target}", promote)
        await self.commit_and_route(req, target, m)

        async def unfence() -> str:
            await self.write(fence_database, source, fence=False)
            return f"{source} follows {target}"

        await self.step(f"unfence {source} as a replica", unfence)
        return m

    def _details(self, note: str = "") -> None:
        p = self._p
        done = [s for s in p.steps if s.ok]
        current = next((s.name for s in reversed(p.steps) if s.ok is None), "")
        head = f"**{p.kind} {p.app}** {p.source or '?'} -> {p.target or '?'} (epoch {p.epoch}): "
        if p.outcome != DrOutcome.RUNNING:
            body = f"{p.outcome}" + (f": {note}" if note else "")
            for m in p.measurements:
                if m.rto_seconds is not None:
                    body += f"; RTO {m.rto_seconds:.1f}s, RPO {m.rpo_bytes or 0} bytes"
        else:
            body = current or note or "starting"
            body += f" ({len(done)} steps done)"
        workflow.set_current_details(head + body)


@workflow.defn(name="Switchover")
class Switchover(DrRun):
    kind = OpKind.SWITCHOVER

    @workflow.run
    async def run(self, req: DrRequest) -> DrResult:
        return await self.execute(req)

    async def steps(self, req: DrRequest) -> None:
        await self.switchover(req, self._p.source, self._p.target)


@workflow.defn(name="Failover")
class Failover(DrRun):
    kind = OpKind.FAILOVER

    @workflow.run
    async def run(self, req: DrRequest) -> DrResult:
        return await self.execute(req)

    async def _lock(self, clusters: list[str]) -> None:
        """The target's lock is required; the lost primary's is taken when free (a
        rollout stuck on a dark cluster must not hold the application hostage)."""
        source, target = self._p.source, self._p.target
        await self.step(f"lock {target}", lambda: self._lock_one(target))

        async def lock_source() -> str:
            try:
                return await self._lock_one(source)
            except StepFailed:
                raise
            except ActivityError as err:
                if is_cancelled_exception(err):
                    raise
                found = await self._call(
                    resolve_clusters,
                    ClusterNames(names=[source]),
                    limit=LOCK_TIMEOUT,
                    retry=INVENTORY_RETRY,
                    heartbeat=None,
                )
                if not found.clusters:
                    raise StepFailed(f"{source} is not in the inventory") from None
                self._refs[source] = found.clusters[0].ref()
                return f"not locked: {root_failure(err).message}"

        await self.step(f"lock {source}", lock_source)

    async def steps(self, req: DrRequest) -> None:
        p, source, target = self._p, self._p.source, self._p.target
        m = Measurement(down_since=req.down_since)
        p.measurements.append(m)
        health = self.grant.primary_health
        if m.down_since is None and health.down:
            m.down_since = health.last_up_at or health.since
        if m.down_since is None:  # the watch has not recorded it down yet: ask the watch
            seen = await self._call(
                watch_view, AppRef(app=p.app), limit=RECORD_TIMEOUT, heartbeat=None
            )
            m.down_since = seen.last_up_at
            health.last_lsn = health.last_lsn or seen.last_lsn
        last_written = ""

        async def fence() -> str:
            nonlocal last_written
            try:
                fenced: DatabaseState = await workflow.execute_activity(
                    fence_database,
                    DatabaseWrite(db=self.db(source), fencing=self.fencing, fence=True),
                    start_to_close_timeout=REACH_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=REACH_RETRY,
                )
            except ActivityError as err:
                if is_cancelled_exception(err):
                    raise
                seen = await self.read(source)
                if seen.writable and not req.force:
                    raise StepFailed(
                        f"{source} cannot be fenced ({root_failure(err).message}) but its "
                        "database still takes writes (a partition only Flotilla sees?): "
                        "promoting would make two primaries; retry with force to accept that"
                    ) from None
                await self._call(
                    note_fence,
                    FenceNote(app=p.app, cluster=source, pending=True),
                    limit=RECORD_TIMEOUT,
                    retry=INVENTORY_RETRY,
                )
                await self._call(
                    start_fence,
                    PendingFence(
                        cluster=source,
                        db=self.db(source),
                        fencing=Fencing(app=p.app, holder="", epoch=p.epoch),
                    ),
                    limit=RECORD_TIMEOUT,
                    retry=INVENTORY_RETRY,
                    heartbeat=None,
                )
                return f"unreachable ({root_failure(err).message}): fence pending until it returns"
            last_written = fenced.written_lsn
            return f"{source} fenced"

        await self.step(f"fence {source}", fence)
        if m.down_since is None:
            m.down_since = workflow.now()

        async def promote() -> str:
            before = await self.read(target)
            if not before.reachable:
                raise StepFailed(f"{target} is unreachable: {before.reason}")
            # What the target received from the source and what it replayed: the unreplayed
            # rest is lost by a promotion without a token.
            m.target_lsn = before.replayed_lsn
            m.source_lsn = max(
                (lsn for lsn in (last_written, health.last_lsn, before.replayed_lsn) if lsn),
                key=parse_lsn,
                default="",
            )
            await self.write(promote_database, target, primary=self.name(target))
            promoted = await self.wait(req, target, "promoted")
            m.rpo_bytes = lsn_gap(m.source_lsn, m.target_lsn)
            m.rpo_seconds = before.lag_seconds
            return f"{target} promoted without a token (timeline {promoted.timeline})"

        await self.step(f"promote {target}", promote)
        await self.commit_and_route(req, target, m)


@workflow.defn(name="Failback")
class Failback(DrRun):
    kind = OpKind.FAILBACK

    @workflow.run
    async def run(self, req: DrRequest) -> DrResult:
        return await self.execute(req)

    async def steps(self, req: DrRequest) -> None:
        p, current, home = self._p, self._p.source, self._p.target

        async def fence() -> str:
            state = await self.write(fence_database, home, fence=True)
            return f"{home} fenced (was primary: {state.is_primary})"

        await self.step(f"fence {home}", fence)

        async def rebuild() -> str:
            new = self.name(current)
            await self.write(rebuild_replica, home, primary=new, source=new, peer=self.db(current))
            state = await self.wait(req, home, "replica")
            return f"{home} streams from {current} (replayed {state.replayed_lsn or '?'})"

        await self.step(f"rebuild {home} as a replica of {current}", rebuild)

        async def pending() -> str:
            await self._call(
                note_fence,
                FenceNote(app=p.app, cluster=home, pending=False),
                limit=RECORD_TIMEOUT,
                retry=INVENTORY_RETRY,
            )
            return "no fence pending"

        await self.step(f"clear the pending fence of {home}", pending)
        await self.switchover(req, current, home)


@workflow.defn(name="Drill")
class Drill(DrRun):
    kind = OpKind.DRILL

    @workflow.run
    async def run(self, req: DrRequest) -> DrResult:
        return await self.execute(req)

    async def steps(self, req: DrRequest) -> None:
        await self.switchover(req, self._p.source, self._p.target)
        await self.switchover(req, self._p.target, self._p.source)


# The run of each operation kind (the starters and the watch start them by definition).
RUNS: dict[OpKind, type[DrRun]] = {
    OpKind.SWITCHOVER: Switchover,
    OpKind.FAILOVER: Failover,
    OpKind.FAILBACK: Failback,
    OpKind.DRILL: Drill,
}
