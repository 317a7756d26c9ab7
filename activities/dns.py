"""The application's DNS record: an external-dns `DNSEndpoint` (externaldns.k8s.io/v1alpha1)
whose endpoint for the record's name lists the primary's target.

The write is check-then-act under the run's fencing epoch (as in activities/database.py):
a stale epoch or an object written under a newer one refuses it; writing the target it
already has is a no-op. When external-dns reports `status.observedGeneration`, the write
waits until it has seen the change, so "switched" means published, not only stored.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dr_records import beating, check_epoch
from activities.kube import api_client, api_error_message, request, write_error
from fleet.dr import EPOCH_ANNOTATION, DnsRecord, DnsState, DnsWrite, EpochCheck
from fleet.dr_rules import object_epoch_problem

GROUP_VERSION = "externaldns.k8s.io/v1alpha1"
OBSERVE_SECONDS = 30.0


def _path(dns: DnsRecord, *, name: bool = True) -> str:
    base = f"/apis/{GROUP_VERSION}/namespaces/{dns.namespace}/dnsendpoints"
    return f"{base}/{dns.name}" if name else base


def _get(dns: DnsRecord) -> dict[str, Any] | None:
    try:
        return dict(request(api_client(dns.credential), "GET", _path(dns)))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise ApplicationError(api_error_message(dns.credential.context, exc)) from None


def _endpoint(obj: dict[str, Any], dns: DnsRecord) -> dict[str, Any] | None:
    for endpoint in (obj.get("spec") or {}).get("endpoints") or []:
        if (
            endpoint.get("dnsName") == dns.dns_name
            and endpoint.get("recordType", "A") == dns.record_type
        ):
            return dict(endpoint)
    return None


def state_of(obj: dict[str, Any] | None, dns: DnsRecord) -> DnsState:
    if obj is None:
        return DnsState()
    endpoint = _endpoint(obj, dns) or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    epoch = annotations.get(EPOCH_ANNOTATION, "0")
    return DnsState(
        targets=[str(t) for t in endpoint.get("targets") or []],
        epoch=int(epoch) if epoch.isdecimal() else 0,
        ttl=int(endpoint.get("recordTTL") or 0),
    )


@activity.defn(no_thread_cancel_exception=True)
def read_dns(dns: DnsRecord) -> DnsState:
    return state_of(_get(dns), dns)


@activity.defn
async def set_dns_target(req: DnsWrite) -> DnsState:
    """Points the record at `req.target` alone (creating the DNSEndpoint if needed)."""
    f = req.fencing
    check = EpochCheck(app=f.app, holder=f.holder, epoch=f.epoch)
    await beating(check_epoch(activity.client(), check))
    state, generation = await beating(asyncio.to_thread(_set, req))
    if generation:
        await _wait_observed(req.dns, generation)
    return state


def _set(req: DnsWrite) -> tuple[DnsState, int]:
    """Writes the record; returns its state and the generation to wait for (0: none)."""
    dns, epoch = req.dns, req.fencing.epoch
    api = api_client(dns.credential)
    where = f"DNSEndpoint {dns.namespace}/{dns.name}"
    obj = _get(dns)
    wanted = {
        "dnsName": dns.dns_name,
        "recordType": dns.record_type,
        "recordTTL": dns.ttl,
        "targets": [req.target],
    }
    if obj is None:
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": "DNSEndpoint",
            "metadata": {
                "name": dns.name,
                "namespace": dns.namespace,
                "annotations": {EPOCH_ANNOTATION: str(epoch)},
            },
            "spec": {"endpoints": [wanted]},
        }
        try:
            created = request(api, "POST", _path(dns, name=False), body=body)
        except ApiException as exc:
            if exc.status == 409:
                raise ApplicationError(f"{where} was created meanwhile; retrying") from None
            raise write_error(where, exc, refused="DNS change refused", type="DnsRefused") from None
        return state_of(dict(created), dns), 0
    current = state_of(obj, dns)
    if problem := object_epoch_problem(current.epoch, epoch, where):
        raise ApplicationError(
            f"DNS change refused: {problem}", type="StaleEpoch", non_retryable=True
        )
    if current.targets == [req.target] and current.ttl == dns.ttl:
        return current, 0
    spec = obj.setdefault("spec", {})
    others = [
        e
        for e in spec.get("endpoints") or []
        if _endpoint({"spec": {"endpoints": [e]}}, dns) is None
    ]
    spec["endpoints"] = [*others, wanted]
    obj.setdefault("metadata", {}).setdefault("annotations", {})[EPOCH_ANNOTATION] = str(epoch)
    activity.logger.info("%s -> %s under epoch %d", dns.dns_name, req.target, epoch)
    try:
        written = dict(request(api, "PUT", _path(dns), body=obj))
    except ApiException as exc:
        if exc.status == 409:
            raise ApplicationError(f"{where} changed meanwhile; retrying") from None
        raise write_error(where, exc, refused="DNS change refused", type="DnsRefused") from None
    generation = 0
    if "observedGeneration" in (obj.get("status") or {}):
        generation = int((written.get("metadata") or {}).get("generation") or 0)
    return state_of(written, dns), generation


async def _wait_observed(dns: DnsRecord, generation: int) -> None:
    """Waits (bounded) until external-dns reports the generation as observed."""
    deadline = time.monotonic() + OBSERVE_SECONDS
    while time.monotonic() < deadline:
        obj = await asyncio.to_thread(_get, dns) or {}
        if int((obj.get("status") or {}).get("observedGeneration") or 0) >= generation:
            return
        activity.heartbeat(f"waiting for external-dns to publish generation {generation}")
        await asyncio.sleep(0.1)
    raise ApplicationError(
        f"external-dns has not published {dns.dns_name} (generation {generation}) after "
        f"{OBSERVE_SECONDS:.0f}s",
        type="DnsNotPublished",
    )
