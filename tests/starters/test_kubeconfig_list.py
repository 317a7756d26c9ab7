"""`KUBECONFIG=a:b` with the cluster's context in `b`: the CLI checks the context and the
worker opens the cluster through the same merged list (kubectl's rules), for onboarding
and for a rollout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from activities.inventory import get_record
from fleet.addon_target import AddonTarget
from fleet.models import Health, Phase
from fleet.rollout_models import Outcome, RolloutSpec
from starters import rollouts
from tests.conftest import RunningWorker
from tests.starters.conftest import ARun
from tests.workflows.lab_support import lab_cluster


def kubeconfig_list(lab_kubeconfig: Path, directory: Path) -> str:
    """`a:b`: `a` holds only another cluster's context (and is current); `b` all of them."""
    full = yaml.safe_load(lab_kubeconfig.read_text())
    first = {**full, "contexts": [c for c in full["contexts"] if c["name"] == "lab-eu-dev-1"]}
    first["current-context"] = "lab-eu-dev-1"
    a, b = directory / "a.kubeconfig", directory / "b.kubeconfig"
    a.write_text(yaml.safe_dump(first))
    b.write_text(yaml.safe_dump(full))
    return os.pathsep.join([str(a), str(b)])


async def test_onboard_and_roll_out_through_a_kubeconfig_list(
    aflotilla: ARun, worker: RunningWorker, lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lab_cluster(lab) as name:
        context = f"lab-{name}"
        listed = kubeconfig_list(lab.kubeconfig, tmp_path)
        # The in-process worker resolves the same way as a worker started with this env.
        monkeypatch.delenv("FLOTILLA_KUBECONFIG", raising=False)
        monkeypatch.setenv("KUBECONFIG", listed)
        monkeypatch.setenv("FLOTILLA_STATE_DIR", str(tmp_path / "state"))

        result = await aflotilla(
            "clusters", "onboard", name, "--context", context, "-l", f"suite={name}",
            address=worker.client.service_client.config.target_host,
            env={"FLOTILLA_TASK_QUEUE": worker.task_queue, "KUBECONFIG": listed},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        record = await get_record(worker.client, name)
        assert record and record.phase == Phase.ACTIVE and record.health == Health.HEALTHY
        assert record.credential.kubeconfig == "" and record.credential.context == context

        # A rollout's children reach the cluster through the same merged list.
        image = "registry.k8s.io/coredns/coredns:v1.11.4"
        spec = RolloutSpec(
            id=f"kubeconfig-list-{name}",
            selector=f"suite={name}",
            waves=["rest"],
            operation=AddonTarget(name="coredns", image=image),
        )
        _, handle = await rollouts.plan_and_start(worker.client, spec, task_queue=worker.task_queue)
        report = await handle.result()
        assert report.outcome == Outcome.SUCCEEDED, report
        assert [o.to_version for o in report.outcomes] == [image]
