"""Targets of the two certificate rollouts, and the rotation's pure state maths.

**Renewal** (`certs-renew`): per cluster, replace the control-plane Machines through
Cluster API (KubeadmControlPlane `spec.rolloutAfter`), which renews the API server's
serving certificate, and re-issue the cert-manager Certificates that are due.

**CA rotation** (`ca-rotate`): three phases, each its own wave pass (`--phase`), modelled
on kubeadm's manual CA rotation through Cluster API's `<cluster>-ca` Secret:

| phase | `<cluster>-ca` tls.crt (trust) | signing key | undo |
|---|---|---|---|
| before | old | old | |
| add | old + new | old | withdraw |
| reissue | new + old | new | revert |
| remove | new | new | restore |

Every phase keeps each consumer working whatever it held before it (the new CA is trusted
everywhere before anything is signed by it; the old one is removed only once nothing is
signed by it), and each undo phase goes back one step the same way.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from fleet.certs import MAX_THRESHOLD
from fleet.durations import Duration
from fleet.models import Model
from fleet.rollout_models import ClusterAccess
from fleet.targets import Target


class CertRenewTarget(Target):
    """Renew control-plane and cert-manager certificates that are due (or all)."""

    kind: Literal["certs-renew"] = "certs-renew"
    within: Duration = Field(
        default=30 * 86400,
        gt=0,
        le=MAX_THRESHOLD,
        description="Renew what expires within this: 30d, 12h.",
    )
    force: bool = Field(default=False, description="Renew everything, due or not.")
    control_plane: bool = Field(
        default=True,
        description="Renew control-plane certificates (Cluster API KCP rollout).",
        json_schema_extra={"cli": "--control-plane/--no-control-plane"},
    )
    cert_manager: bool = Field(
        default=True,
        description="Renew cert-manager Certificates (as `cmctl renew`).",
        json_schema_extra={"cli": "--cert-manager/--no-cert-manager"},
    )

    default_cluster_timeout: ClassVar[float] = 1800

    def describe(self) -> str:
        what = [
            w
            for w, on in (
                ("control plane", self.control_plane),
                ("cert-manager", self.cert_manager),
            )
            if on
        ]
        due = "all" if self.force else f"due within {self.within / 86400:g}d"
        return f"certificate renewal ({' + '.join(what) or 'nothing'}, {due})"

    def problems(self) -> list[str]:
        if not (self.control_plane or self.cert_manager):
            return ["nothing to renew: --no-control-plane and --no-cert-manager together"]
        return []


class RotationPhase(StrEnum):
    ADD = "add"
    REISSUE = "reissue"
    REMOVE = "remove"
    # Undo of each phase (also runnable on their own, after a run has ended).
    WITHDRAW = "withdraw"
    REVERT = "revert"
    RESTORE = "restore"


UNDO = {
    RotationPhase.ADD: RotationPhase.WITHDRAW,
    RotationPhase.REISSUE: RotationPhase.REVERT,
    RotationPhase.REMOVE: RotationPhase.RESTORE,
    RotationPhase.WITHDRAW: RotationPhase.ADD,
    RotationPhase.REVERT: RotationPhase.REISSUE,
    RotationPhase.RESTORE: RotationPhase.REMOVE,
}

_SAYS = {
    RotationPhase.ADD: "1/3 add: trust the new CA next to the old one",
    RotationPhase.REISSUE: "2/3 reissue: sign the serving certificates with the new CA",
    RotationPhase.REMOVE: "3/3 remove: trust only the new CA",
    RotationPhase.WITHDRAW: "undo 1/3: trust only the old CA again",
    RotationPhase.REVERT: "undo 2/3: sign with the old CA again",
    RotationPhase.RESTORE: "undo 3/3: trust the old CA again",
}


class CaState(Model):
    """What `<cluster>-ca` holds in a phase: trust bundle order and signer, by role."""

    trust: list[Literal["old", "new"]]
    signer: Literal["old", "new"]


STATES: dict[RotationPhase, CaState] = {
    RotationPhase.ADD: CaState(trust=["old", "new"], signer="old"),
    RotationPhase.REISSUE: CaState(trust=["new", "old"], signer="new"),
    RotationPhase.REMOVE: CaState(trust=["new"], signer="new"),
    RotationPhase.WITHDRAW: CaState(trust=["old"], signer="old"),
    RotationPhase.REVERT: CaState(trust=["old", "new"], signer="old"),
    RotationPhase.RESTORE: CaState(trust=["new", "old"], signer="new"),
}


class CaRotateTarget(Target):
    """One phase of a cluster CA rotation (see the module docstring)."""

    kind: Literal["ca-rotate"] = "ca-rotate"
    phase: RotationPhase = Field(
        description="add, reissue or remove (undo: withdraw, revert, restore)."
    )

    default_cluster_timeout: ClassVar[float] = 1800
    undoable: ClassVar[bool] = True

    def describe(self) -> str:
        return f"CA rotation {_SAYS[self.phase]}"

    def undo(self, previous: str) -> CaRotateTarget:
        return CaRotateTarget(phase=UNDO[self.phase])


def precondition(
    phase: RotationPhase, trusted: list[set[str]], signer: str, old: str, new: str
) -> str:
    """Why `phase` may not start, from what consumers trust now (one set of CA
    fingerprints per consumer), the CA that signs the served leaf and the staged old/new
    CAs; "" when it may. The rule keeps every consumer connected during the step: the
    phase's signer is trusted by every consumer already, and the current signer stays in
    the phase's trust. Re-running a phase that is done is allowed."""
    roles = {"old": old, "new": new}
    names = {old: "old", new: "new"}
    state = STATES[phase]
    if signer not in names:
        return "the served certificate is signed by neither the old nor the new CA"
    if not all(roles[state.signer] in t for t in trusted):
        if state.signer == "new":
            return "not every consumer trusts the new CA yet: run phase add first"
        return "the old CA is no longer trusted everywhere: run phase restore first"
    if names[signer] not in state.trust:
        if names[signer] == "old":
            return "the served certificate is not signed by the new CA yet: run phase reissue first"
        return "the served certificate is signed by the new CA: run phase revert first"
    return ""


def published(
    phase: RotationPhase, trusted: list[set[str]], signer: str, old: str, new: str
) -> bool:
    """Whether every consumer holds exactly the phase's trust and the leaf is signed by
    its signer: then the phase is done and no rollout is needed."""
    state = STATES[phase]
    roles = {"old": old, "new": new}
    want = {roles[r] for r in state.trust}
    return signer == roles[state.signer] and all(t == want for t in trusted)


def problems_after(
    phase: RotationPhase, pins: dict[str, set[str]], signer: str, old: str, new: str
) -> list[str]:
    """What is wrong after a phase: each consumer (by name) must trust exactly the
    phase's CAs and the leaf must be signed by its signer."""
    state = STATES[phase]
    roles = {"old": old, "new": new}
    want = {roles[r] for r in state.trust}
    found = [
        f"{consumer} trusts {', '.join(sorted(fp[:12] for fp in cas)) or 'nothing'}"
        for consumer, cas in sorted(pins.items())
        if cas != want
    ]
    if signer != roles[state.signer]:
        found.append(
            f"served certificate signed by {signer[:12] or 'an unknown CA'}, "
            f"not the {state.signer} CA"
        )
    return found


class StagedCa(Model):
    """The staged rotation of one cluster, by fingerprint (the keys stay in its Secret)."""

    old: str
    new: str
    has_old_key: bool = True


# --- activity messages ------------------------------------------------------------------


class CertClusterRequest(Model):
    """One cluster of a certificate rollout: how to reach it, and the time it may take."""

    cluster: ClusterAccess
    timeout_seconds: float = 1800


class RenewRequest(CertClusterRequest):
    target: CertRenewTarget


class RenewPlan(Model):
    """What one cluster has due, read before anything is renewed."""

    serving_not_after: datetime | None = None  # the served leaf (None: no handshake)
    control_plane_due: bool = False
    machines: dict[str, datetime] = Field(default_factory=dict)  # Machine -> cert expiry
    certificates: dict[str, int] = Field(default_factory=dict)  # "ns/name" -> revision


class ControlPlaneRenewal(CertClusterRequest):
    """Renew unless every control-plane Machine's certificates expire after `before`."""

    before: datetime


class CertificateRenewals(CertClusterRequest):
    """Re-issue each Certificate ("ns/name") whose revision is still the one given."""

    certificates: dict[str, int]


class ServingCheck(CertClusterRequest):
    """The served leaf must expire after `after`, verify with the hub's CA data, and be
    trusted by every consumer of the cluster CA."""

    after: datetime | None = None


class RotateRequest(CertClusterRequest):
    phase: RotationPhase


class RotationState(Model):
    """Where one cluster's rotation stands (fingerprints only)."""

    old: str
    new: str
    signer: str  # the CA that signed the served leaf
    changed: bool = False  # this call wrote something
    problems: list[str] = Field(default_factory=list)
