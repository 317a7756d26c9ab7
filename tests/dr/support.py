"""Helpers for the DR tests: policies for lab-seeded applications and fake ones."""

from __future__ import annotations

from fleet.dr import DnsRecord, DrMember, DrPolicy, Role, WatchSettings
from fleet.models import CredentialRef


def lab_policy(
    app: str,
    clusters: list[str],
    *,
    kubeconfig: str = "",
    management_context: str = "lab-mgmt",
    ttl: int = 5,
    automatic: bool = False,
    watch: WatchSettings | None = None,
) -> DrPolicy:
    """The policy of an application the lab seeded on `clusters` (first = primary),
    following the lab's names (docs/lab-dr.md): Cluster `<app>-<member>` in namespace
    `<app>`, endpoint host `<app>-<member>-rw.<app>.svc.<member>.lab`, DNSEndpoint `<app>`
    for `<app>.db.lab` (CNAME) in the management cluster."""
    return DrPolicy(
        app=app,
        namespace=app,
        members=[
            DrMember(
                cluster=c,
                role=Role.PRIMARY if i == 0 else Role.STANDBY,
                database=f"{app}-{c}",
                endpoint=f"{app}-{c}-rw.{app}.svc.{c}.lab",
            )
            for i, c in enumerate(clusters)
        ],
        dns=DnsRecord(
            credential=CredentialRef(kubeconfig=kubeconfig, context=management_context),
            namespace=app,
            name=app,
            dns_name=f"{app}.db.lab",
            record_type="CNAME",
            ttl=ttl,
        ),
        automatic=automatic,
        watch=watch or WatchSettings(),
    )
