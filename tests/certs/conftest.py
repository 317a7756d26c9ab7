"""A lab for the certificate tests (its own: rotations change every CA) with seeded
expiries, onboarded on the session's dev server and worker, and offboarded when the
package's tests end: its clusters share their names with the session lab's, which later
packages onboard (a name still held by another cluster's UID would be refused).

The lab tests share it and run in file order: test_lab_1_scan reads the seeded state,
test_lab_2_renew renews it, test_lab_3_rotate rotates every CA, test_lab_4_* build on that."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fleet.models import OnboardResult
from tests.conftest import RunningWorker, lab_request
from tests.starters.conftest import aflotilla, cli_env, flotilla  # noqa: F401 (CLI fixtures)

HISTORIES = Path(__file__).parent / "histories"
# Seeded: eu-dev-1's API server certificate expires in 5 days.
SERVING_DAYS = {"eu-dev-1": 5.0}


@pytest.fixture(scope="package")
def certs_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from lab.testing import LabProcess

    expiry = ",".join(f"{k}={v:g}" for k, v in SERVING_DAYS.items())
    with LabProcess(
        clusters=4,
        directory=tmp_path_factory.mktemp("certs-lab"),
        upgrade_seconds=0.5,
        rollout_delay=0.2,
        cert_expiry=expiry,
    ) as process:
        seed_cert_manager(process, "eu-staging-1")
        yield process


def seed_cert_manager(lab: Any, cluster: str) -> None:
    """Through the Kubernetes API: a selfSigned Issuer and two Certificates, `web` expiring
    in 10 days (renewed 1 h before) and `api` in 200 days."""
    from activities.kube import api_client, request
    from fleet.models import CredentialRef

    api = api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=f"lab-{cluster}"))
    base = "/apis/cert-manager.io/v1/namespaces/default"
    issuer = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Issuer",
        "metadata": {"name": "selfsigned", "namespace": "default"},
        "spec": {"selfSigned": {}},
    }
    request(api, "POST", f"{base}/issuers", body=issuer)
    for name, hours in (("web", 240), ("api", 4800)):
        cert = {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "secretName": f"{name}-tls",
                "commonName": f"{name}.example.com",
                "dnsNames": [f"{name}.example.com"],
                "duration": f"{hours}h",
                "renewBefore": "1h",
                "issuerRef": {"name": "selfsigned", "kind": "Issuer", "group": "cert-manager.io"},
            },
        }
        request(api, "POST", f"{base}/certificates", body=cert)


@pytest.fixture(scope="package")
async def certs_fleet(temporal_worker: RunningWorker, certs_lab: Any) -> AsyncIterator[list[str]]:
    """The certs lab's clusters, onboarded (labelled suite=certs), offboarded afterwards."""
    from starters.inventory import offboard, onboard_many

    requests = []
    for c in certs_lab.info["clusters"]:
        request = lab_request(certs_lab, c["name"])
        request.labels = {**request.labels, "suite": "certs"}
        requests.append(request)
    results = await onboard_many(
        temporal_worker.client, requests, task_queue=temporal_worker.task_queue
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    names = sorted(r.record.name for r in results if isinstance(r, OnboardResult))
    yield names
    for name in names:
        await offboard(
            temporal_worker.client, name, force=True, task_queue=temporal_worker.task_queue
        )


async def save_history(client: Any, workflow_id: str, name: str) -> None:
    """With FLOTILLA_RECORD_HISTORIES=1, keeps the run's history for the replay test."""
    if os.environ.get("FLOTILLA_RECORD_HISTORIES") != "1":
        return
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


async def run_rollout(
    worker: RunningWorker,
    operation: Any,
    waves: str = "canary:1,rest",
    *,
    selector: str = "suite=certs",
    wait: bool = True,
    **options: Any,
) -> Any:
    """Plans and starts a rollout of `operation`; its report when `wait`, else the handle."""
    import uuid

    from fleet.rollout_models import RolloutOptions, RolloutSpec
    from starters import rollouts

    spec = RolloutSpec(
        id=uuid.uuid4().hex[:8],
        selector=selector,
        waves=[waves],
        operation=operation,
        options=RolloutOptions(**{"max_concurrent": 4, **options}),
    )
    plan = await rollouts.make_plan(worker.client, spec)
    handle = await rollouts.start_rollout(worker.client, plan, task_queue=worker.task_queue)
    return await handle.result() if wait else handle


def served_not_after(lab: Any, name: str) -> datetime:
    return datetime.fromisoformat(
        lab.admin.certificates(name)["serving"]["notAfter"].replace("Z", "+00:00")
    )


# Private keys and tokens seen during the tests (rotations and renewals replace them, so
# they are collected as the tests go); test_lab_9_no_secrets looks for each in history.
KEYS: set[str] = set()


def collect_keys(lab: Any) -> set[str]:
    """Every private key and token in the lab now: CA Secrets, staged rotations and
    kubeconfig Secrets in mgmt, TLS Secrets in each cluster, the lab's own tokens."""
    import base64

    from activities.kube import api_client, request
    from fleet.models import CredentialRef

    found = set(lab.secrets())
    contexts = ["lab-mgmt", *(c["context"] for c in lab.info["clusters"])]
    for context in contexts:
        api = api_client(CredentialRef(kubeconfig=str(lab.kubeconfig), context=context))
        for secret in request(api, "GET", "/api/v1/secrets").get("items", []):
            for key, value in (secret.get("data") or {}).items():
                if key.endswith(".key") or key == "value":
                    found.add(base64.b64decode(value).decode())
    found.discard("")
    KEYS.update(found)
    return found
