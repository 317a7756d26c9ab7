"""The DR lab's own figures: the CPU its replication ticker costs per seeded Cluster,
database endpoint throughput, and the RPO/RTO of a planned switchover and of a failover
driven by hand (the baseline Flotilla's DR operations add to).

Starts a lab (3 clusters) in a child process, seeds an app on two of them, runs the lab's
workload client and drives CNPG Clusters and the DNSEndpoint through the Kubernetes API
(the official client), the way docs/lab-dr.md describes. Stops by itself.

    .venv/bin/python bench/lab_dr.py [--dr-step 0.3] [--ttl 1] [--lag 2.0] [--apps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.dr import TICK, DrAppSpec  # noqa: E402
from lab.runtime import Lab  # noqa: E402
from lab.testing import LabProcess  # noqa: E402

A, B = "eu-dev-1", "eu-staging-1"
CNPG = ("postgresql.cnpg.io", "v1")
DNS = ("externaldns.k8s.io", "v1alpha1")


_APIS: dict[str, client.CustomObjectsApi] = {}


def custom(lab: LabProcess, member: str) -> client.CustomObjectsApi:
    if member in _APIS:
        return _APIS[member]
    configuration = client.Configuration()
    config.load_kube_config(
        str(lab.kubeconfig), context=lab.contexts[member], client_configuration=configuration
    )
    _APIS[member] = client.CustomObjectsApi(client.ApiClient(configuration))
    return _APIS[member]


def wait_for(predicate: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {predicate}")
        time.sleep(0.02)


class App:
    def __init__(self, lab: LabProcess, name: str) -> None:
        self.lab, self.name = lab, name

    def cluster(self, member: str) -> dict[str, Any]:
        api = custom(self.lab, member)
        obj = api.get_namespaced_custom_object(
            *CNPG, self.name, "clusters", f"{self.name}-{member}"
        )
        return cast(dict[str, Any], obj)

    def patch(self, member: str, replica: dict[str, Any]) -> None:
        custom(self.lab, member).patch_namespaced_custom_object(
            *CNPG, self.name, "clusters", f"{self.name}-{member}", {"spec": {"replica": replica}}
        )

    def writable(self, member: str) -> bool:
        app = self.lab.admin.dr_app(self.name)
        return bool(next(m for m in app["members"] if m["member"] == member)["writable"])

    def point_dns(self, member: str) -> None:
        api = custom(self.lab, "mgmt")
        endpoint = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(*DNS, self.name, "dnsendpoints", self.name),
        )
        host = f"{self.name}-{member}-rw.{self.name}.svc.{member}.lab"
        endpoint["spec"]["endpoints"][0]["targets"] = [host]
        api.replace_namespaced_custom_object(*DNS, self.name, "dnsendpoints", self.name, endpoint)

    def switchover(self, old: str, new: str) -> None:
        self.patch(old, {"primary": f"{self.name}-{new}"})
        wait_for(lambda: self.cluster(old)["status"].get("demotionToken"))
        token = self.cluster(old)["status"]["demotionToken"]
        self.patch(new, {"primary": f"{self.name}-{new}", "promotionToken": token})
        wait_for(lambda: self.writable(new))
        self.point_dns(new)

    def failover(self, new: str) -> None:
        self.patch(new, {"primary": f"{self.name}-{new}"})
        wait_for(lambda: self.writable(new))
        self.point_dns(new)


def measure(lab: LabProcess, app: str, action: Callable[[], None], settle: float) -> dict[str, Any]:
    workload = lab.admin.start_workload(app, interval_ms=10)
    time.sleep(1.0)
    action()
    time.sleep(settle)
    return lab.admin.stop_workload(workload)


def line(label: str, report: dict[str, Any]) -> None:
    if "-v" in sys.argv:
        print(report)
    print(
        f"{label:<24}acked {report['acked']:>5}  lost {report['lostCount']:>4}  "
        f"RTO {report['rtoSeconds']:.2f} s  dual-primary probes {report['dualPrimaryProbes']}"
    )


async def tick_cost(apps: int) -> float:
    """CPU milliseconds one replication tick takes with `apps` three-member apps."""
    with tempfile.TemporaryDirectory(prefix="lab-dr-") as tmp:
        async with Lab(directory=Path(tmp), clusters=3, nodes=1) as lab:
            assert lab.dr is not None
            for i in range(apps):
                await lab.dr.seed_app(DrAppSpec(f"app{i}", (A, B, "us-staging-1")))
            ticks = 200
            began = time.process_time()
            for _ in range(ticks):
                lab.dr.operator.tick()
            return (time.process_time() - began) / ticks * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dr-step", type=float, default=0.3)
    parser.add_argument("--ttl", type=int, default=1)
    parser.add_argument("--lag", type=float, default=2.0, help="replica lag before the failover")
    parser.add_argument("--apps", type=int, default=20, help="apps for the tick cost")
    parser.add_argument("-v", action="store_true", help="print the full measurements")
    args = parser.parse_args()
    cost = asyncio.run(tick_cost(args.apps))
    share = cost / (TICK * 1000) * 100
    clusters = args.apps * 3
    print(
        f"{'replication tick':<24}{cost:.2f} ms CPU, {clusters} Clusters ({share:.0f}% of a core)"
    )
    with (
        tempfile.TemporaryDirectory(prefix="lab-dr-") as tmp,
        LabProcess(clusters=3, directory=Path(tmp), nodes=1, dr_step=args.dr_step) as lab,
    ):
        lab.admin.seed_dr_app("bench", [A, B], ttl=args.ttl)
        app = App(lab, "bench")
        throughput = lab.admin.start_workload("bench", interval_ms=1)
        time.sleep(2.0)
        report = lab.admin.stop_workload(throughput)
        print(f"dr step {args.dr_step} s, DNS TTL {args.ttl} s, replica lag {args.lag} s")
        rate = report["acked"] / report["seconds"]
        print(f"{'sequential writes':<24}{rate:.0f} acked/s (one client)")
        line(
            "planned switchover", measure(lab, "bench", lambda: app.switchover(A, B), args.ttl + 1)
        )

        lab.admin.fault(A, "replication-lag", seconds=args.lag)

        def crash_and_fail_over() -> None:
            lab.admin.fault(B, "dark", mode="refuse")
            app.failover(A)

        line("failover (dark primary)", measure(lab, "bench", crash_and_fail_over, args.ttl + 1))


if __name__ == "__main__":
    main()
