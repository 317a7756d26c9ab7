"""The DR record (`dr-app:<name>`) on the dev server, no lab: admission, epochs, the
commit point, pending fences, a dead holder replaced; and DR runs refused at admission
(unknown application, a cluster outside the policy, an operation running) without
touching anything."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from activities.dr_records import _update, check_epoch, get_app, register_policy
from fleet.dr import (
    AppSummary,
    BeginRequest,
    DrRequest,
    EpochCheck,
    FenceNote,
    Grant,
    OpKind,
    SetPrimary,
    app_id,
)
from starters.cli_dr import lab_policy
from starters.errors import failure_message
from tests.conftest import RunningWorker
from tests.workflows.core_support import start_holder, unique
from workflows.dr import Failover, Switchover


async def test_begin_gives_epochs_one_operation_at_a_time(temporal_worker: RunningWorker) -> None:
    client, queue = temporal_worker.client, temporal_worker.task_queue
    app = unique("app")
    state = await register_policy(client, lab_policy(app, ["eu", "us"]), task_queue=queue)
    assert state.primary == "eu" and state.epoch == 0

    first = await start_holder(client)
    begin = BeginRequest(app=app, holder=first.id, kind=OpKind.FAILOVER, target="us")
    grant = await _update(client, app, "begin", begin, Grant)
    assert grant.epoch == 1 and grant.primary == "eu"
    again = await _update(client, app, "begin", begin, Grant)  # a retry: same epoch
    assert again.epoch == 1

    second = await start_holder(client)
    other = begin.model_copy(update={"holder": second.id})
    with pytest.raises(Exception, match="is running"):
        await _update(client, app, "begin", other, Grant)

    await check_epoch(client, EpochCheck(app=app, holder=first.id, epoch=1))
    with pytest.raises(Exception, match="stale"):
        await check_epoch(client, EpochCheck(app=app, holder=first.id, epoch=0))
    commit = SetPrimary(app=app, holder=first.id, epoch=1, primary="us")
    assert (await _update(client, app, "set_primary", commit, AppSummary)).primary == "us"

    # the first holder dies without finishing: the next operation replaces it, and the
    # dead one can no longer write
    await first.terminate("crashed")
    back = BeginRequest(app=app, holder=second.id, kind=OpKind.FAILBACK, target="eu")
    grant = await _update(client, app, "begin", back, Grant)
    assert grant.epoch == 2
    with pytest.raises(Exception, match="stale"):
        await check_epoch(client, EpochCheck(app=app, holder=first.id, epoch=1))
    stale_commit = commit.model_copy(update={"primary": "eu"})
    with pytest.raises(Exception, match="stale"):
        await _update(client, app, "set_primary", stale_commit, AppSummary)

    fence = FenceNote(app=app, cluster="eu", pending=True)
    state = await _update(client, app, "note_fence", fence, AppSummary)
    assert state.pending_fences == ["eu"]
    with pytest.raises(Exception, match="not a cluster of"):
        await _update(
            client, app, "note_fence", fence.model_copy(update={"cluster": "ap"}), AppSummary
        )
    await second.terminate()


async def test_runs_refuse_bad_input_without_touching_anything(
    temporal_worker: RunningWorker,
) -> None:
    client, queue = temporal_worker.client, temporal_worker.task_queue
    app = unique("app")
    await register_policy(client, lab_policy(app, ["eu", "us"]), task_queue=queue)

    async def refusal(workflow: object, request: DrRequest) -> str:
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                workflow,  # type: ignore[arg-type]
                request,
                id=unique("dr"),
                task_queue=queue,
            )
        return failure_message(failed.value)

    assert "no DR policy for application" in await refusal(
        Failover.run, DrRequest(app=unique("nope"))
    )
    assert "not a cluster of" in await refusal(Failover.run, DrRequest(app=app, target="ap"))
    assert "already is the primary" in await refusal(
        Switchover.run, DrRequest(app=app, target="eu")
    )
    holder = await start_holder(client)
    await _update(
        client,
        app,
        "begin",
        BeginRequest(app=app, holder=holder.id, kind=OpKind.SWITCHOVER, target="us"),
        Grant,
    )
    assert "is running" in await refusal(Failover.run, DrRequest(app=app, target="us"))
    state = await get_app(client, app)
    assert state is not None
    assert state.primary == "eu" and state.epoch == 1 and state.runs == []
    assert state.operation is not None and state.operation.holder == holder.id
    await holder.terminate()
    desc = await client.get_workflow_handle(app_id(app)).describe()
    assert desc.status is not None
