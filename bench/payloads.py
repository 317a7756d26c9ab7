"""Bytes per cluster of what a rollout carries through Temporal, and what that makes at
fleet sizes, against Temporal's limits (2 MB per payload, 512 KB warning).

    .venv/bin/python bench/payloads.py [--clusters 1000 5000]

Builds the messages the engine sends for an N-cluster Kubernetes upgrade, the way the
planner and the engine build them (cluster names like `eu-prod-0001`, a maintenance-window
label on one cluster in ten, every cluster finished with timestamps and versions), and
prints the JSON size of each: the start input (the plan), the continue-as-new input (plan
and progress), the `progress` query answer, the membership answer (names) and the run's
result (the report). Per-cluster
messages (ClusterTask, results, preflight and health chunks of 50) do not grow with N.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import workflows.registry  # noqa: F401  (registers the operation kinds' targets)
from fleet.k8s_target import K8sTarget
from fleet.models import ClusterRecord, CredentialRef, ManagementRef
from fleet.rollout_models import (
    ClusterNames,
    ClusterStatus,
    RolloutInput,
    RolloutSpec,
)
from fleet.waves import build_plan
from fleet.windows import WINDOW_LABEL
from workflows.rollout import Rollout

KB = 1024
LIMIT, WARNING = 2 * KB * KB, 512 * KB


def fleet(n: int) -> list[ClusterRecord]:
    kubeconfig = "/etc/flotilla/kubeconfigs/fleet.yaml"
    records = []
    for i in range(n):
        name = f"eu-prod-{i:04d}"
        labels = {"env": "prod", "region": "eu", "provider": "aws", "tier": "standard"}
        if i % 10 == 0:
            labels[WINDOW_LABEL] = "sat.0200-0600"
        records.append(
            ClusterRecord(
                name=name,
                labels=labels,
                credential=CredentialRef(kubeconfig=kubeconfig, context=name),
                management=ManagementRef(
                    credential=CredentialRef(kubeconfig=kubeconfig, context="mgmt"),
                    namespace="fleet",
                    cluster=name,
                ),
                version="v1.30.6",
            )
        )
    return records


def sizes(n: int) -> dict[str, int]:
    spec = RolloutSpec(
        id="20261203-120000-abcd",
        waves=["canary:1,10%,30%,rest"],
        operation=K8sTarget(version="v1.31.2"),
    )
    records = fleet(n)
    plan = build_plan(spec, records)
    start = RolloutInput(plan=plan)
    progress = Rollout._initial_progress(start)
    now = datetime.now(UTC)
    for cluster in progress.clusters:
        cluster.status, cluster.changed = ClusterStatus.SUCCEEDED, True
        cluster.to_version, cluster.started_at, cluster.finished_at = "v1.31.2", now, now
    carried = RolloutInput(plan=plan, progress=progress)
    names = ClusterNames(names=[r.name for r in records])
    report = Rollout(carried)._report()  # pure: builds the result from the progress
    return {
        "start input (plan)": len(start.model_dump_json()),
        "continue-as-new input (plan + progress)": len(carried.model_dump_json()),
        "progress query answer": len(progress.model_dump_json()),
        "membership answer (names)": len(names.model_dump_json()),
        "the run's result (the report)": len(report.model_dump_json()),
        # For comparison: what the old plan and the per-wave record fetch carried.
        "(the full records, no longer carried)": sum(len(r.model_dump_json()) for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    for n in args.clusters:
        print(f"{n} clusters")
        for label, size in sizes(n).items():
            flag = "OVER 2 MB" if size > LIMIT else "over 512 KB" if size > WARNING else ""
            print(f"  {label:<42}: {size / KB:8.1f} KB  {size / n:6.1f} B/cluster  {flag}")


if __name__ == "__main__":
    main()
