"""Certificate renewal and CA rotation on one cluster, through Cluster API and cert-manager.

Control-plane certificates are renewed the way Cluster API renews them: a
KubeadmControlPlane rollout (`spec.rolloutAfter`) replaces the control-plane Machines, and
each new Machine comes with new certificates. cert-manager Certificates are re-issued as
`cmctl renew` does: condition Issuing=True, reason ManuallyTriggered, on the status.

A CA rotation writes the cluster's CA Secret `<cluster>-ca` in the management cluster
(tls.crt: the trust bundle, tls.key: the signing key, as CAPI keeps it) and rolls the
control plane out so the cluster publishes the new trust and serves a leaf from the new
signer. The new CA is generated here and staged in `<cluster>-ca-rotation` (old.crt,
old.key, new.crt, new.key) so every phase, and its undo, finds both; keys never leave the
activity. The hub's kubeconfig is written through fleet/certs_kubeconfig.py: before a
rollout it trusts the union of what it had and what comes, afterwards exactly the new
trust, so the hub never loses the cluster.

Every activity is check-then-act: a phase already published, a Machine already renewed, a
Certificate already at a later revision or a rollout already armed is not done twice.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.certs import (
    CAPI_MACHINES,
    CERTIFICATES,
    CLUSTER_NAME_LABEL,
    CONTROL_PLANE_LABEL,
    EXPIRY_ANNOTATION,
    _list,
    _time,
    handshake,
    scan_cluster,
)
from activities.kube import api_client, api_error_message, write_error
from activities.kube import request as kube_request
from activities.polling import Look, wait_until
from fleet import certs_kubeconfig, kubeconfig
from fleet.certs import due, fingerprint, issuer_among, load_bundle
from fleet.certs_models import CertEntry, CertReport, CertSource
from fleet.certs_targets import (
    STATES,
    CertificateRenewals,
    CertRenewTarget,
    ControlPlaneRenewal,
    RenewPlan,
    RenewRequest,
    RotateRequest,
    RotationPhase,
    RotationState,
    ServingCheck,
    precondition,
    problems_after,
    published,
)
from fleet.models import ManagementRef
from fleet.rollout_models import ClusterAccess

KCP = "/apis/controlplane.cluster.x-k8s.io/v1beta1/namespaces/{ns}/kubeadmcontrolplanes/{name}"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
MERGE_PATCH = "application/merge-patch+json"
ISSUING = {
    "type": "Issuing",
    "status": "True",
    "reason": "ManuallyTriggered",
    "message": "Certificate re-issuance manually triggered",
}


def _management(access: ClusterAccess) -> ManagementRef:
    if access.management is None:
        raise ApplicationError(
            f"{access.name}: no Cluster API management reference in its record",
            type="NoClusterAPI",
            non_retryable=True,
        )
    return access.management


def _call(cluster: str, call: Callable[[], Any]) -> Any:
    """A Kubernetes call; unreachable or 5xx is retryable, with a secret-free message."""
    try:
        return call()
    except ApiException as exc:
        if exc.status in (400, 403, 404, 409, 422):
            raise
        raise ApplicationError(api_error_message(cluster, exc)) from None
    except ApplicationError:
        raise
    except Exception as exc:
        raise ApplicationError(api_error_message(cluster, exc), type="Unreachable") from None


# --- Cluster API: the control plane --------------------------------------------------------


def _machines(mgmt: ManagementRef, cluster: str) -> list[dict[str, Any]]:
    api = api_client(mgmt.credential)
    selector = f"{CLUSTER_NAME_LABEL}%3D{cluster},{CONTROL_PLANE_LABEL}"
    path = f"{CAPI_MACHINES.format(ns=mgmt.namespace)}?labelSelector={selector}"
    return list(_call("management", lambda: _list(api, path)))


def _machine_expiry(machine: dict[str, Any]) -> datetime | None:
    annotations = (machine.get("metadata") or {}).get("annotations") or {}
    return _time((machine.get("status") or {}).get("certificatesExpiryDate")) or _time(
        annotations.get(EXPIRY_ANNOTATION)
    )


def _kcp(mgmt: ManagementRef, cluster: str) -> dict[str, Any]:
    api = api_client(mgmt.credential)
    path = KCP.format(ns=mgmt.namespace, name=f"{cluster}-control-plane")
    try:
        return dict(_call("management", lambda: kube_request(api, "GET", path)))
    except ApiException as exc:
        if exc.status == 404:
            raise ApplicationError(
                f"{cluster}: no KubeadmControlPlane {cluster}-control-plane in namespace "
                f"{mgmt.namespace} of the management cluster",
                type="NoClusterAPI",
                non_retryable=True,
            ) from None
        raise


def _kcp_failure(kcp: dict[str, Any]) -> str:
    for cond in (kcp.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "False" and cond.get("severity") == "Error":
            return f"{cond['type']}: {cond.get('reason', '')}: {cond.get('message', '')}"
    return ""


def _kcp_settled(kcp: dict[str, Any]) -> bool:
    spec, status = kcp.get("spec") or {}, kcp.get("status") or {}
    replicas = spec.get("replicas", 1)
    caught_up = status.get("observedGeneration", 0) >= (kcp.get("metadata") or {}).get(
        "generation", 0
    )
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    counts = status.get("replicas", replicas) == replicas == status.get("readyReplicas", 0)
    return caught_up and ready and counts and status.get("updatedReplicas", replicas) == replicas


def _arm_rollout(mgmt: ManagementRef, cluster: str, machines: list[dict[str, Any]]) -> None:
    """Sets KCP `spec.rolloutAfter` so every current control-plane Machine is replaced;
    nothing when a rollout after the newest Machine is armed already (a retry)."""
    created = [
        t
        for m in machines
        if (t := _time((m.get("metadata") or {}).get("creationTimestamp"))) is not None
    ]
    newest = max(created, default=datetime.now(UTC) - timedelta(seconds=1))
    kcp = _kcp(mgmt, cluster)
    armed = _time((kcp.get("spec") or {}).get("rolloutAfter"))
    if armed is not None and armed > newest:
        return
    now = datetime.now(UTC).replace(microsecond=0)
    at = max(now, newest.replace(microsecond=0) + timedelta(seconds=1))
    api = api_client(mgmt.credential)
    path = KCP.format(ns=mgmt.namespace, name=f"{cluster}-control-plane")
    body = {"spec": {"rolloutAfter": at.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    try:
        _call("management", lambda: _patch(api, path, body))
    except ApiException as exc:
        refused = f"{cluster}: {cluster}-control-plane refused the rollout"
        raise write_error("management", exc, refused=refused, type="RolloutRejected") from None
    activity.logger.info("control plane rollout armed for %s", at, extra={"cluster": cluster})


def _patch(api: Any, path: str, body: dict[str, Any]) -> Any:
    method, url, headers, data, _ = api.param_serialize(
        method="PATCH",
        resource_path=path,
        header_params={"Content-Type": MERGE_PATCH, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=data, _request_timeout=(5, 30))
    response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return None


def _wait_rollout(
    request: RotateRequest | ControlPlaneRenewal,
    before: set[str],
    done: Callable[[list[dict[str, Any]]], tuple[bool, str]],
) -> list[dict[str, Any]]:
    """Waits until no Machine of `before` is left, the KCP has settled and `done` holds."""
    access = request.cluster
    mgmt = _management(access)

    def look() -> Look[list[dict[str, Any]]]:
        kcp = _kcp(mgmt, access.name)
        if failure := _kcp_failure(kcp):
            raise ApplicationError(
                f"{access.name}: control plane rollout failed: {failure}",
                type="RolloutFailed",
                non_retryable=True,
            )
        machines = _machines(mgmt, access.name)
        names = {str(m["metadata"]["name"]) for m in machines}
        settled = _kcp_settled(kcp)
        left = sorted(before & names)
        # `done` may be costly (handshakes): asked only once the rollout itself is over.
        finished, waiting = done(machines) if settled and not left else (False, "")
        status = kcp.get("status") or {}
        says = (
            f"{access.name} control plane: {status.get('updatedReplicas', 0)}/"
            f"{status.get('replicas', 0)} updated"
            + (f", replacing {', '.join(left)}" if left else "")
            + ("" if settled else ", settling")
            + (f", {waiting}" if waiting else "")
        )
        return Look(
            value=machines,
            done=not left and settled and finished,
            waiting_for=says,
            progress=(tuple(sorted(names)), settled, finished, waiting),
        )

    return wait_until(
        look,
        cluster=access.name,
        goal="control plane rollout",
        timeout_seconds=request.timeout_seconds,
        timeout_type="RolloutTimeout",
    )


# --- renewal -------------------------------------------------------------------------------


@activity.defn(no_thread_cancel_exception=True)
def plan_renewal(request: RenewRequest) -> RenewPlan:
    """What is due on the cluster: the control plane (a Machine's or the served leaf's
    expiry within `within`, or `force`) and each due cert-manager Certificate with its
    current revision. Reads only."""
    access, target = request.cluster, request.target
    now = datetime.now(UTC)
    plan = RenewPlan()
    if target.control_plane:
        view = _hub(access)
        shake = handshake(view.server, view.ca_pem)
        if shake.leaf is not None:
            plan.serving_not_after = shake.leaf.not_valid_after_utc
        expiries: dict[str, datetime] = {}
        for machine in _machines(_management(access), access.name):
            if (expiry := _machine_expiry(machine)) is not None:
                expiries[str(machine["metadata"]["name"])] = expiry
        plan.machines = expiries
        dates = [*expiries.values(), *([plan.serving_not_after] if plan.serving_not_after else [])]
        plan.control_plane_due = target.force or any(
            d <= now + timedelta(seconds=target.within) for d in dates
        )
    if target.cert_manager:
        plan.certificates = _due_certificates(access, target, now)
    return plan


def _due_certificates(
    access: ClusterAccess, target: CertRenewTarget, now: datetime
) -> dict[str, int]:
    api = api_client(access.credential)
    found: dict[str, int] = {}
    for cert in _call(access.name, lambda: _list(api, CERTIFICATES)):
        status = cert.get("status") or {}
        meta = cert.get("metadata") or {}
        not_after = _time(status.get("notAfter"))
        entry = CertEntry(
            source=CertSource.CERT_MANAGER,
            name=str(meta.get("name")),
            not_after=not_after or now,
            renewal_time=_time(status.get("renewalTime")),
        )
        expired_or_missing = not_after is None
        if target.force or expired_or_missing or due(entry, now, target.within):
            found[f"{meta.get('namespace')}/{meta.get('name')}"] = int(status.get("revision") or 0)
    return found


@activity.defn(no_thread_cancel_exception=True)
def renew_control_plane(request: ControlPlaneRenewal) -> RenewPlan:
    """Rolls the control plane out unless every Machine's certificates already expire
    after `before` (done by an earlier attempt), and waits until the new Machines run.
    Returns the Machines' new expiries."""
    access = request.cluster
    mgmt = _management(access)
    machines = _machines(mgmt, access.name)
    if not machines:
        raise ApplicationError(
            f"{access.name}: no control-plane Machines in namespace {mgmt.namespace} of the "
            "management cluster",
            type="NoClusterAPI",
            non_retryable=True,
        )

    def renewed(items: list[dict[str, Any]]) -> tuple[bool, str]:
        late = [m for m in items if (e := _machine_expiry(m)) is None or e <= request.before]
        return not late, f"{len(late)} Machine(s) with certificates expiring by {request.before:%F}"

    if renewed(machines)[0]:
        return RenewPlan(machines=_expiries(machines))
    _arm_rollout(mgmt, access.name, machines)
    names = {str(m["metadata"]["name"]) for m in machines}
    return RenewPlan(machines=_expiries(_wait_rollout(request, names, renewed)))


def _expiries(machines: list[dict[str, Any]]) -> dict[str, datetime]:
    return {
        str(m["metadata"]["name"]): e for m in machines if (e := _machine_expiry(m)) is not None
    }


@activity.defn(no_thread_cancel_exception=True)
def renew_certificates(request: CertificateRenewals) -> RenewPlan:
    """Triggers re-issuance of each Certificate still at its given revision (as `cmctl
    renew`: Issuing=True ManuallyTriggered on the status; not again while Issuing) and
    waits until each has a later revision and is Ready. A Certificate deleted meanwhile
    needs nothing."""
    access = request.cluster
    api = api_client(access.credential)

    def path(key: str) -> str:
        ns, name = key.split("/", 1)
        return f"/apis/cert-manager.io/v1/namespaces/{ns}/certificates/{name}"

    def get(key: str) -> dict[str, Any] | None:
        try:
            return dict(_call(access.name, lambda: kube_request(api, "GET", path(key))))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ApplicationError(api_error_message(access.name, exc)) from None

    for key, revision in request.certificates.items():
        cert = get(key)
        if cert is None:
            continue
        status = cert.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        if int(status.get("revision") or 0) > revision or any(
            c.get("type") == "Issuing" and c.get("status") == "True" for c in conditions
        ):
            continue
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions.append({**ISSUING, "lastTransitionTime": now})
        try:
            _call(access.name, partial(kube_request, api, "PUT", path(key) + "/status", body=cert))
        except ApiException as exc:
            if exc.status != 409:  # 409: changed meanwhile; the wait sees the new state
                raise write_error(
                    access.name, exc, refused=f"{key} refused", type="RenewRejected"
                ) from None
        activity.logger.info("re-issuance of %s triggered", key, extra={"cluster": access.name})

    def look() -> Look[dict[str, int]]:
        revisions: dict[str, int] = {}
        waiting = []
        for key, revision in request.certificates.items():
            cert = get(key)
            if cert is None:
                continue
            status = cert.get("status") or {}
            revisions[key] = int(status.get("revision") or 0)
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            if revisions[key] <= revision or not ready:
                waiting.append(f"Certificate {key} (revision {revisions[key]})")
        return Look(
            value=revisions,
            done=not waiting,
            waiting_for=", ".join(waiting),
            progress=tuple(sorted(revisions.items())),
        )

    wait_until(
        look,
        cluster=access.name,
        goal="Certificates re-issued",
        timeout_seconds=request.timeout_seconds,
        timeout_type="RenewTimeout",
    )
    return RenewPlan()


def request_(api: Any, method: str, path: str, body: Any = None) -> Any:
    return kube_request(api, method, path, body=body)


@activity.defn(no_thread_cancel_exception=True)
def check_serving(request: ServingCheck) -> CertReport:
    """A full scan of the cluster (activities/certs.py); its problems list what fails the
    check: no verified handshake from the hub, a served leaf not later than `after`, a
    consumer of the cluster CA that does not trust the leaf's signer."""
    report = scan_cluster(request.cluster)
    leaf = next((e for e in report.entries if e.source == CertSource.SERVING), None)
    problems: list[str] = []
    if leaf is None or not report.hub_accepts:
        problems.append(f"the hub cannot verify the API server: {'; '.join(report.problems)}")
    elif request.after is not None and leaf.not_after <= request.after:
        problems.append(
            f"the API server still serves a certificate expiring {leaf.not_after:%F %T}"
        )
    signer = report.serving_ca
    for pin in report.trust:
        if _cluster_ca_consumer(pin.consumer) and signer and signer not in pin.cas:
            problems.append(f"{pin.consumer} does not trust the serving CA {signer[:12]}")
    report.problems = problems
    return report


def _cluster_ca_consumer(consumer: str) -> bool:
    """The hub's kubeconfig and kube-root-ca.crt: consumers that always trust the cluster
    CA (webhooks and Secrets may pin other CAs)."""
    return consumer.startswith(("hub kubeconfig", "ConfigMap "))


def _consumers(report: CertReport, cas: set[str]) -> dict[str, set[str]]:
    """Consumers of the cluster CA: those that always are, and any other pinning one of
    `cas` (the rotation's old or new CA), with the CAs each trusts."""
    return {
        p.consumer: set(p.cas)
        for p in report.trust
        if _cluster_ca_consumer(p.consumer) or cas & set(p.cas)
    }


# --- CA rotation ---------------------------------------------------------------------------


def _hub(access: ClusterAccess) -> certs_kubeconfig.HubView:
    source = kubeconfig.source_of(access.credential.kubeconfig)
    try:
        return certs_kubeconfig.view(source, access.credential.context)
    except (certs_kubeconfig.HubConfigError, kubeconfig.KubeconfigError) as exc:
        raise ApplicationError(
            f"{access.name}: {exc}", type="BadCredentialRef", non_retryable=True
        ) from None


def _secret(mgmt: ManagementRef, name: str) -> dict[str, Any] | None:
    api = api_client(mgmt.credential)
    try:
        return dict(
            _call(
                "management",
                lambda: kube_request(api, "GET", f"{SECRETS.format(ns=mgmt.namespace)}/{name}"),
            )
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise ApplicationError(api_error_message("management", exc)) from None


def _decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode((secret.get("data") or {}).get(key) or "")


def _new_ca(cluster: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"flotilla:{cluster}:{now:%Y%m%d%H%M%S}"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _signer_of(bundle: list[x509.Certificate], key_pem: bytes) -> x509.Certificate | None:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for cert in bundle:
        if (
            cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == public
        ):
            return cert
    return None


def _staged(request: RotateRequest) -> dict[str, bytes]:
    """The rotation's CAs (old.crt/old.key/new.crt/new.key), staging them on phase add.
    Refuses any other phase when nothing is staged."""
    access, mgmt = request.cluster, _management(request.cluster)
    name = f"{access.name}-ca-rotation"
    secret = _secret(mgmt, name)
    if secret is not None:
        staged = {k: _decoded(secret, k) for k in ("old.crt", "old.key", "new.crt", "new.key")}
        if request.phase != RotationPhase.ADD or staged["old.key"]:
            return staged
        # A completed rotation (its old key dropped): the next one starts from its new CA.
        _delete_secret(mgmt, name, secret)
    if request.phase != RotationPhase.ADD:
        raise ApplicationError(
            f"{access.name}: no CA rotation is staged (Secret {mgmt.namespace}/{name}): "
            "run phase add first",
            type="NoRotation",
            non_retryable=True,
        )
    ca = _secret(mgmt, f"{access.name}-ca")
    if ca is None:
        raise ApplicationError(
            f"{access.name}: no CA Secret {mgmt.namespace}/{access.name}-ca in the management "
            "cluster",
            type="NoClusterAPI",
            non_retryable=True,
        )
    bundle, key = load_bundle(_decoded(ca, "tls.crt")), _decoded(ca, "tls.key")
    signer = _signer_of(bundle, key)
    if signer is None or len(bundle) != 1:
        raise ApplicationError(
            f"{access.name}: {access.name}-ca holds {len(bundle)} CA certificate(s)"
            + ("" if signer else " and none matches its key")
            + ": a rotation Flotilla did not stage is under way; finish it first",
            type="RotationConflict",
            non_retryable=True,
        )
    new_crt, new_key = _new_ca(access.name)
    data = {
        "old.crt": signer.public_bytes(serialization.Encoding.PEM),
        "old.key": key,
        "new.crt": new_crt,
        "new.key": new_key,
    }
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": mgmt.namespace,
            "labels": {CLUSTER_NAME_LABEL: access.name, "app.kubernetes.io/managed-by": "flotilla"},
        },
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    api = api_client(mgmt.credential)
    try:
        _call(
            "management",
            lambda: kube_request(api, "POST", SECRETS.format(ns=mgmt.namespace), body=body),
        )
    except ApiException as exc:
        if exc.status != 409:  # created by an earlier attempt: use that one
            raise write_error(
                "management", exc, refused="staging the new CA refused", type="RotationRejected"
            ) from None
        return _staged(request)
    activity.logger.info("new CA staged", extra={"cluster": access.name})
    return data


def _live(access: ClusterAccess, cas: set[str]) -> tuple[dict[str, set[str]], str]:
    """Consumers of the cluster CA with the CAs each trusts, and the served leaf's signer
    (fingerprints); what the scan reads (the hub's kubeconfig included)."""
    report = scan_cluster(access)
    if not report.reachable:
        raise ApplicationError(f"{access.name}: {'; '.join(report.problems)}", type="Unreachable")
    return _consumers(report, cas), report.serving_ca


def _put_ca(mgmt: ManagementRef, cluster: str, crt: bytes, key: bytes) -> bool:
    """Makes `<cluster>-ca` hold tls.crt `crt` and tls.key `key`; False when it did."""
    secret = _secret(mgmt, f"{cluster}-ca")
    if secret is None:
        raise ApplicationError(
            f"{cluster}: {cluster}-ca is gone", type="NoClusterAPI", non_retryable=True
        )
    if _decoded(secret, "tls.crt") == crt and _decoded(secret, "tls.key") == key:
        return False
    secret["data"] = {
        **(secret.get("data") or {}),
        "tls.crt": base64.b64encode(crt).decode(),
        "tls.key": base64.b64encode(key).decode(),
    }
    api = api_client(mgmt.credential)
    path = f"{SECRETS.format(ns=mgmt.namespace)}/{cluster}-ca"
    try:
        _call("management", lambda: kube_request(api, "PUT", path, body=secret))
    except ApiException as exc:
        if exc.status == 409:
            raise ApplicationError(f"{cluster}-ca changed meanwhile; retrying") from None
        raise write_error(
            "management", exc, refused=f"{cluster}-ca refused", type="RotationRejected"
        ) from None
    return True


@activity.defn(no_thread_cancel_exception=True)
def rotate_ca(request: RotateRequest) -> RotationState:
    """Brings the cluster to `request.phase` (fleet/certs_targets.py STATES): a phase that
    is published already changes nothing; otherwise its precondition is checked against
    what every consumer trusts now, the hub's kubeconfig is made to trust old and new,
    `<cluster>-ca` is written, the control plane rolled out (once), and the hub's
    kubeconfig set to exactly the new trust."""
    access, mgmt = request.cluster, _management(request.cluster)
    staged = _staged(request)
    activity.heartbeat("rotation staged")
    cas = {
        role: load_bundle(staged[f"{role}.crt"])[0]
        for role in ("old", "new")
        if staged[f"{role}.crt"]
    }
    old, new = fingerprint(cas["old"]), fingerprint(cas["new"])
    pins, signer = _live(access, {old, new})
    activity.heartbeat("consumers read")
    state = RotationState(old=old, new=new, signer=signer)
    trusted = list(pins.values())
    if published(request.phase, trusted, signer, old, new):
        # A retry finding the phase published: the attempt before it got this far (a
        # first attempt that finds it so returns at once) and was lost after its writes
        # (a killed worker): the run did change the cluster.
        state.changed = activity.info().attempt > 1
        return state
    if problem := precondition(request.phase, trusted, signer, old, new):
        raise ApplicationError(
            f"{access.name}: {problem}", type="RotationOrder", non_retryable=True
        )
    want = STATES[request.phase]
    if staged[f"{want.signer}.key"] == b"":
        raise ApplicationError(
            f"{access.name}: the {want.signer} CA's key was dropped when the rotation completed",
            type="RotationOrder",
            non_retryable=True,
        )
    bundle = b"".join(cas[role].public_bytes(serialization.Encoding.PEM) for role in want.trust)
    hub = _hub(access)
    source = kubeconfig.source_of(access.credential.kubeconfig)
    union = {fingerprint(c): c for c in [*load_bundle(hub.ca_pem), *load_bundle(bundle)]}
    beat = _beat("waiting for the hub kubeconfig's lock")
    _unless_cancelled(access.name)
    certs_kubeconfig.set_cluster_ca(
        source,
        access.credential.context,
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in union.values()),
        waiting=beat,
    )
    _unless_cancelled(access.name)
    state.changed = _put_ca(mgmt, access.name, bundle, staged[f"{want.signer}.key"])
    machines = _machines(mgmt, access.name)
    _unless_cancelled(access.name)
    _arm_rollout(mgmt, access.name, machines)
    activity.heartbeat("control plane rollout armed")
    goal = {"old": old, "new": new}
    want_trust, want_signer = {goal[r] for r in want.trust}, goal[want.signer]

    def done(_: list[dict[str, Any]]) -> tuple[bool, str]:
        trust, signer = _published_now(access, list(cas.values()))
        ok = signer == want_signer and trust == want_trust
        return ok, "" if ok else "trust not yet published"

    _wait_rollout(request, {str(m["metadata"]["name"]) for m in machines}, done)
    _unless_cancelled(access.name)
    certs_kubeconfig.set_cluster_ca(source, access.credential.context, bundle, waiting=beat)
    state.changed = True
    if request.phase == RotationPhase.REMOVE:
        _drop_old_key(mgmt, access.name)
    state.signer = want_signer
    return state


def _unless_cancelled(cluster: str) -> None:
    """A cancellation point before a write: the activity is cancelled cooperatively (see
    worker.all_activities), and an attempt given up on (a heartbeat timeout) must not
    write after the retry that replaced it."""
    if activity.is_cancelled():
        raise ApplicationError(f"{cluster}: rotation step cancelled", type="Cancelled")


def _beat(text: str) -> Callable[[], None]:
    return lambda: activity.heartbeat(text)


def _published_now(access: ClusterAccess, cas: list[x509.Certificate]) -> tuple[set[str], str]:
    """What the cluster publishes now, cheaply: the CAs of kube-system's kube-root-ca.crt
    (the root CA publisher's copy) and which of `cas` signed the served leaf ("" if none)."""
    api = api_client(access.credential)
    path = "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt"
    cm = _call(access.name, partial(kube_request, api, "GET", path))
    trust = {fingerprint(c) for c in load_bundle(str((cm.get("data") or {}).get("ca.crt", "")))}
    shake = handshake(_hub(access).server, b"")
    signer = issuer_among(shake.leaf, cas) if shake.leaf is not None else ""
    return trust, signer


def _delete_secret(mgmt: ManagementRef, name: str, secret: dict[str, Any]) -> None:
    """Deletes `name` if it is still the version read (a precondition on its UID and
    resourceVersion, so a concurrent re-staging is not lost)."""
    api = api_client(mgmt.credential)
    meta = secret.get("metadata") or {}
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
    }
    path = f"{SECRETS.format(ns=mgmt.namespace)}/{name}"
    try:
        _call("management", partial(kube_request, api, "DELETE", path, body=body))
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise ApplicationError(api_error_message("management", exc)) from None


def _drop_old_key(mgmt: ManagementRef, cluster: str) -> None:
    """After phase remove nothing is signed by the old CA: its key goes (its certificate
    stays, so `restore` can trust it again)."""
    name = f"{cluster}-ca-rotation"
    api = api_client(mgmt.credential)
    path = f"{SECRETS.format(ns=mgmt.namespace)}/{name}"
    try:
        _call("management", lambda: _patch(api, path, {"data": {"old.key": None}}))
    except ApiException as exc:
        if exc.status != 404:
            raise ApplicationError(api_error_message("management", exc)) from None


@activity.defn(no_thread_cancel_exception=True)
def verify_rotation(request: RotateRequest) -> RotationState:
    """Checks the phase took everywhere: every consumer of the cluster CA (the hub's
    kubeconfig included) trusts exactly the phase's CAs, the served leaf is signed by the
    phase's signer, and the hub's handshake verifies. Problems are listed, not raised."""
    access = request.cluster
    staged = _staged(request)
    old = fingerprint(load_bundle(staged["old.crt"])[0])
    new = fingerprint(load_bundle(staged["new.crt"])[0])
    activity.heartbeat("scanning")
    report = scan_cluster(access)
    activity.heartbeat("scanned")
    pins = _consumers(report, {old, new})
    state = RotationState(old=old, new=new, signer=report.serving_ca)
    state.problems = problems_after(request.phase, pins, report.serving_ca, old, new)
    if not report.hub_accepts:
        state.problems.append(f"the hub's handshake fails: {'; '.join(report.problems)}")
    return state
