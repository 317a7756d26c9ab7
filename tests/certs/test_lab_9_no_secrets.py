"""No private key, token or kubeconfig credential the certificate operations touched
appears in any workflow history (inputs, results, errors, details, search attributes)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.certs.conftest import KEYS, collect_keys
from tests.conftest import RunningWorker
from tests.workflows.test_no_secrets import all_histories, needles


async def test_no_key_material_in_any_history(
    temporal_worker: RunningWorker, certs_lab: Any, certs_fleet: list[str]
) -> None:
    await asyncio.to_thread(collect_keys, certs_lab)
    assert any("PRIVATE KEY" in k for k in KEYS), "no keys collected"
    histories = await all_histories(temporal_worker.client)
    kinds = {key.split(":")[0] for key in histories}
    assert {"cluster", "rollout", "certscan"} <= kinds, kinds
    leaks = [
        (key, secret[:40])
        for key, raw in histories.items()
        for secret in KEYS
        if any(n in raw for n in needles(secret))
    ]
    assert not leaks, leaks[:5]
