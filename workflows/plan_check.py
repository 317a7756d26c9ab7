"""PlanCheck: the live checks of a plan (the operation's preflight on every planned
cluster) without starting the rollout, for `plan` and for `start` before it starts.

Credentials live on the worker, so the check runs there; it changes nothing and returns
the problems found (cluster -> what is wrong), which the caller shows or refuses on, and
the approvals the run would ask for.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.rollout import input_problem, preflight_problems

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from fleet.rollout_models import PlanCheckRequest, PreflightResult
    from workflows.registry import OPERATIONS


@workflow.defn(name="PlanCheck", failure_exception_types=[ValidationError])
class PlanCheck:
    @workflow.run
    async def run(self, request: PlanCheckRequest) -> PreflightResult:
        plan = request.plan
        if problem := input_problem(plan):
            return PreflightResult(problems={"plan": problem})
        preflight = OPERATIONS.get(plan.spec.operation.kind).preflight
        if preflight is None:
            return PreflightResult()
        workflow.set_current_details(f"checking {len(plan.cluster_names())} clusters")
        return await preflight_problems(plan, preflight)
