"""A stand-in operation workflow for the `ops` commands: it has the shape every Flotilla
operation has (KIND/CLUSTERS search attributes, current details, a `progress` query) and
finishes or fails when signalled, so tests decide when it ends."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from fleet import search


class ClusterStep(BaseModel):
    name: str
    state: str


class Wave(BaseModel):
    name: str
    clusters: list[ClusterStep]


class SampleProgress(BaseModel):
    phase: str
    done: int
    waves: list[Wave]


class SampleInput(BaseModel):
    clusters: list[str]


class SampleEnd(BaseModel):
    fail: bool = False


@workflow.defn(name="SampleOperation")
class SampleOperation:
    def __init__(self) -> None:
        self._end: SampleEnd | None = None
        self._progress = SampleProgress(phase="starting", done=0, waves=[])

    @workflow.run
    async def run(self, request: SampleInput) -> SampleProgress:
        workflow.upsert_search_attributes(
            [search.KIND.value_set("sample"), search.CLUSTERS.value_set(request.clusters)]
        )
        self._progress = SampleProgress(
            phase="wave canary",
            done=1,
            waves=[
                Wave(
                    name="canary",
                    clusters=[ClusterStep(name=request.clusters[0], state="succeeded")],
                ),
                Wave(
                    name="rest",
                    clusters=[ClusterStep(name=c, state="pending") for c in request.clusters[1:]],
                ),
            ],
        )
        workflow.set_current_details(f"canary {request.clusters[0]} done; waiting")
        await workflow.wait_condition(lambda: self._end is not None)
        assert self._end is not None
        if self._end.fail:
            raise ApplicationError("eu-prod-1 is locked by rollout:k8s:x", type="ClusterLocked")
        self._progress.phase = "done"
        return self._progress

    @workflow.query
    def progress(self) -> SampleProgress:
        return self._progress

    @workflow.signal
    def end(self, end: SampleEnd) -> None:
        self._end = end
