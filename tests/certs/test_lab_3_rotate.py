"""CA rotation on the lab: three phases across waves, with a probe running throughout that
verifies every handshake (the hub through its kubeconfig as re-read each time, the lab's
in-cluster consumers); kubectl with the updated kubeconfig after each phase; an abort after
phase 1 and the undo phase run on its own; a rollback while the old CA is trusted; phases
out of order refused without a change."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from activities.certs import handshake
from fleet import certs_kubeconfig
from fleet.certs_targets import CaRotateTarget, RotationPhase
from fleet.rollout_models import ClusterStatus, ControlRequest, Outcome, RunStatus, WaveStatus
from starters import rollouts
from tests.certs.conftest import collect_keys, run_rollout, save_history
from tests.conftest import RunningWorker
from tests.workflows.core_support import eventually

KUBECTL = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")


class Probe:
    """Checks every cluster's handshakes in a loop until stopped (and kubectl against one
    cluster a round); counts failures."""

    def __init__(self, lab: Any, names: list[str]):
        self.lab, self.names = lab, names
        self.checks = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            for name in self.names:
                self.check(name)
            # kubectl with the kubeconfig as it is now, one cluster a round (it is slow)
            self.kubectl(self.names[rounds % len(self.names)])
            rounds += 1
            time.sleep(0.3)  # checks all the time without starving the lab of CPU

    def kubectl(self, name: str) -> None:
        self.checks += 1
        try:
            kubectl_ok(self.lab, name)
        except (AssertionError, subprocess.SubprocessError) as exc:
            self.failures.append(f"{name}: kubectl: {exc}")

    def check(self, name: str) -> None:
        self.checks += 1
        try:
            view = certs_kubeconfig.view(str(self.lab.kubeconfig), f"lab-{name}")
        except Exception as exc:  # a torn read of the kubeconfig would be a failure too
            self.failures.append(f"{name}: kubeconfig: {exc}")
            return
        shake = handshake(view.server, view.ca_pem)
        if not shake.verified:
            self.failures.append(f"{name}: hub handshake: {shake.error}")
        for consumer in self.lab.admin.certificates(name)["consumers"]:
            if not consumer["trusted"]:
                self.failures.append(f"{name}: {consumer['kind']} {consumer['name']}: {consumer}")


def kubectl_ok(lab: Any, name: str) -> None:
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(lab.kubeconfig), "--context", f"lab-{name}", "get", "ns"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def trust(lab: Any, name: str) -> list[str]:
    return [t["fingerprint"] for t in lab.admin.certificates(name)["trust"]]


def hub_cas(lab: Any, name: str) -> int:
    config = yaml.safe_load(Path(lab.kubeconfig).read_text())
    entry = next(c for c in config["clusters"] if c["name"] == f"lab-{name}")
    data = base64.b64decode(entry["cluster"]["certificate-authority-data"])
    return data.count(b"BEGIN CERTIFICATE")


async def test_abort_after_phase_one_leaves_everything_working(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str]
) -> None:
    """Phase add done on the canary, then the run aborted before the rest: every handshake
    keeps passing, the canary trusts both CAs and the rest only the old one; the undo
    phase as its own run then restores the canary."""
    original = {n: trust(certs_lab, n) for n in certs_fleet}
    handle = await run_rollout(
        temporal_worker,
        CaRotateTarget(phase=RotationPhase.ADD),
        "canary:1,rest",
        wait=False,
        approve_between=True,
    )

    async def waiting() -> bool:
        p = await rollouts.progress(temporal_worker.client, handle.id)
        return p.waves[1].status == WaveStatus.AWAITING_APPROVAL

    with Probe(certs_lab, certs_fleet) as probe:
        await eventually(waiting, attempts=600)
        canary = (await rollouts.progress(temporal_worker.client, handle.id)).waves[0].clusters[0]
        await rollouts.control(temporal_worker.client, handle.id, "abort", ControlRequest(who="t"))
        report = await handle.result()
        assert report.outcome == Outcome.ABORTED, report
        for name in certs_fleet:
            kubectl_ok(certs_lab, name)
            cas = 2 if name == canary else 1
            assert len(trust(certs_lab, name)) == cas and hub_cas(certs_lab, name) == cas, name
        labels = next(c for c in certs_lab.info["clusters"] if c["name"] == canary)["labels"]
        selector = ",".join(["suite=certs", *(f"{k}={v}" for k, v in sorted(labels.items()))])
        undo = await run_rollout(
            temporal_worker, CaRotateTarget(phase=RotationPhase.WITHDRAW), "rest", selector=selector
        )
        assert undo.outcome == Outcome.SUCCEEDED and [o.name for o in undo.outcomes] == [canary]
    assert not probe.failures, probe.failures[:5]
    for name in certs_fleet:
        assert trust(certs_lab, name) == original[name]
        assert hub_cas(certs_lab, name) == 1
    kubectl_ok(certs_lab, canary)


async def test_rollback_while_old_ca_trusted(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str]
) -> None:
    original = {n: trust(certs_lab, n) for n in certs_fleet}
    handle = await run_rollout(
        temporal_worker,
        CaRotateTarget(phase=RotationPhase.ADD),
        "canary:1,rest",
        wait=False,
        approve_between=True,
    )

    async def waiting() -> bool:
        p = await rollouts.progress(temporal_worker.client, handle.id)
        return p.waves[1].status == WaveStatus.AWAITING_APPROVAL

    with Probe(certs_lab, certs_fleet) as probe:
        await eventually(waiting, attempts=600)
        canary = (await rollouts.progress(temporal_worker.client, handle.id)).waves[0].clusters[0]
        assert len(trust(certs_lab, canary)) == 2 and hub_cas(certs_lab, canary) == 2
        await rollouts.control(
            temporal_worker.client, handle.id, "rollback", ControlRequest(who="t")
        )
        report = await handle.result()
    assert report.status == RunStatus.ROLLED_BACK, report
    assert next(o for o in report.outcomes if o.name == canary).status == ClusterStatus.ROLLED_BACK
    assert not probe.failures, probe.failures[:5]
    for name in certs_fleet:
        assert trust(certs_lab, name) == original[name]
        assert hub_cas(certs_lab, name) == 1
    kubectl_ok(certs_lab, canary)
    await save_history(temporal_worker.client, f"{handle.id}/{canary}/rollback", "CaRotate-undo")


async def test_rotation_in_three_phases_keeps_every_handshake(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str]
) -> None:
    original = {n: trust(certs_lab, n)[0] for n in certs_fleet}
    # Out of order: refused before anything is written.
    report = await run_rollout(temporal_worker, CaRotateTarget(phase=RotationPhase.REMOVE))
    assert report.outcome == Outcome.HALTED
    assert "run phase add first" in report.outcomes[0].reason, report.outcomes[0]
    assert {n: trust(certs_lab, n)[0] for n in certs_fleet} == original
    with Probe(certs_lab, certs_fleet) as probe:
        for phase in (RotationPhase.ADD, RotationPhase.REISSUE, RotationPhase.REMOVE):
            report = await run_rollout(
                temporal_worker, CaRotateTarget(phase=phase), "canary:1,rest"
            )
            assert report.outcome == Outcome.SUCCEEDED, (phase, report)
            await asyncio.to_thread(collect_keys, certs_lab)
            for name in certs_fleet:
                kubectl_ok(certs_lab, name)
                fps = trust(certs_lab, name)
                assert len(fps) == (1 if phase == RotationPhase.REMOVE else 2), (phase, name)
                assert hub_cas(certs_lab, name) == len(fps)
                assert (original[name] in fps) == (phase != RotationPhase.REMOVE)
                signer = certs_lab.admin.certificates(name)["signer"]["fingerprint"]
                assert (signer == original[name]) == (phase == RotationPhase.ADD)
            await save_history(
                temporal_worker.client, f"{report.id}/{certs_fleet[0]}", f"CaRotate-{phase.value}"
            )
            if phase == RotationPhase.ADD:
                await save_history(temporal_worker.client, report.id, "Rollout-ca-rotate")
            await asyncio.sleep(0.2)  # the probe sees the settled state too
    assert probe.checks > 20
    assert not probe.failures, probe.failures[:5]
    # A done phase re-run changes nothing.
    report = await run_rollout(temporal_worker, CaRotateTarget(phase=RotationPhase.REMOVE))
    assert {o.status for o in report.outcomes} == {ClusterStatus.UNCHANGED}
