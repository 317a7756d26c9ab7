"""What the admin API reports about one cluster's certificates: the served chain, the trust
bundle, and whether each in-lab consumer's trust would accept what it connects to.

A verdict is a real TLS handshake in memory (lab.pki.handshake_error) between a client
trusting only the consumer's bundle and the server it talks to: the cluster's current
serving context for kube-root-ca.crt, kubeconfigs and `inject-apiserver-ca` webhooks, the
Certificate's Secret for `inject-ca-from` webhooks.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from lab import pki
from lab.cluster import Cluster
from lab.controllers import capi, certmanager
from lab.controllers.common import CONFIGMAPS
from lab.controllers.namespaces import ROOT_CA
from lab.store import Obj

if TYPE_CHECKING:
    from lab.runtime import Lab


def report(lab: Lab, cluster: Cluster) -> dict[str, Any]:
    tls = cluster.tls
    assert tls is not None
    served = tls.context()
    consumers: list[dict[str, Any]] = []

    def verdict(
        kind: str,
        namespace: str,
        name: str,
        bundle: bytes | None,
        server: Any,
        host: str = pki.LOOPBACK,
    ) -> None:
        trusted: bool | None = False
        if bundle is None:
            error: str | None = "no CA bundle"
        elif server is None:
            trusted, error = None, "the lab does not know the server it calls"
        else:
            error = pki.handshake_error(server, bundle, host)
            trusted = error is None
        consumers.append(
            {"kind": kind, "namespace": namespace, "name": name, "trusted": trusted, "error": error}
        )

    for cm in cluster.store.list(CONFIGMAPS):
        if cm["metadata"]["name"] == ROOT_CA:
            pem = cm.get("data", {}).get("ca.crt", "")
            verdict("ConfigMap", cm["metadata"]["namespace"], ROOT_CA, pem.encode(), served)
    for key in certmanager.WEBHOOK_KEYS:
        for webhook in cluster.store.list(key):
            for hook in webhook.get("webhooks", []):
                config = hook.get("clientConfig", {})
                server = _webhook_server(cluster, webhook, config, served)
                kind = webhook.get("kind") or key.resource
                name = f"{webhook['metadata']['name']}/{hook.get('name', '')}"
                verdict(kind, "", name, _b64(config.get("caBundle")), server, _host(config))
    if not cluster.management:
        secret = lab.management.store.find(
            capi.SECRETS, capi.NAMESPACE, f"{cluster.name}-kubeconfig"
        )
        if secret is not None:
            config = _b64(secret.get("data", {}).get("value"))
            bundle = _kubeconfig_ca(config.decode() if config else "", cluster.name)
            verdict("Secret", capi.NAMESPACE, f"{cluster.name}-kubeconfig", bundle, served)
    try:
        text = lab.kubeconfig.read_text()
    except OSError:
        text = ""
    verdict(
        "Kubeconfig",
        "",
        f"{lab.kubeconfig}#{cluster.context}",
        _kubeconfig_ca(text, cluster.context),
        served,
    )
    return {
        "name": cluster.name,
        "server": cluster.server,
        "serving": pki.describe(tls.serving.cert),
        "signer": pki.describe(tls.signer.cert),
        "trust": [pki.describe(c) for c in pki.certificates(tls.trust_pem)],
        "consumers": consumers,
    }


def _b64(value: object) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _host(client_config: Obj) -> str:
    """The name the API server checks a webhook's certificate against."""
    service = client_config.get("service")
    if isinstance(service, dict):
        return f"{service.get('name', '')}.{service.get('namespace', '')}.svc"
    return urlsplit(str(client_config.get("url", ""))).hostname or pki.LOOPBACK


def _kubeconfig_ca(text: str, cluster_entry: str) -> bytes | None:
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None
    for entry in config.get("clusters", []) if isinstance(config, dict) else []:
        if entry.get("name") == cluster_entry:
            return _b64(entry.get("cluster", {}).get("certificate-authority-data"))
    return None


def _webhook_server(cluster: Cluster, webhook: Obj, config: Obj, served: Any) -> Any:
    """The TLS server a webhook's caBundle must verify, or None when the lab cannot tell:
    the API server itself (`inject-apiserver-ca`, or a `url` at this cluster's endpoint),
    else the Secret of the Certificate it injects from or whose dnsNames hold its
    service's name."""
    annotations = webhook["metadata"].get("annotations", {})
    url = urlsplit(str(config.get("url", "")))
    if annotations.get(certmanager.INJECT_APISERVER) == "true" or (
        url.hostname in (pki.LOOPBACK, "localhost") and url.port == cluster.port
    ):
        return served
    store = cluster.store
    secret: Obj | None = None
    if certmanager.INJECT_FROM in annotations:
        ns, _, name = annotations[certmanager.INJECT_FROM].partition("/")
        cert = store.find(certmanager.CERTIFICATES, ns, name)
        secret_name = (cert or {}).get("spec", {}).get("secretName", "")
        secret = store.find(certmanager.SECRETS, ns, secret_name)
    elif certmanager.INJECT_FROM_SECRET in annotations:
        ns, _, name = annotations[certmanager.INJECT_FROM_SECRET].partition("/")
        secret = store.find(certmanager.SECRETS, ns, name)
    elif isinstance(config.get("service"), dict):
        ns, host = config["service"].get("namespace", ""), _host(config)
        for cert in store.list(certmanager.CERTIFICATES, ns):
            if host in cert.get("spec", {}).get("dnsNames", []):
                secret = store.find(certmanager.SECRETS, ns, cert["spec"].get("secretName", ""))
                break
    data = (secret or {}).get("data", {})
    crt, key = _b64(data.get("tls.crt")), _b64(data.get("tls.key"))
    if not crt or not key:
        return None
    try:
        return pki.server_ssl_context(pki.KeyPair(crt, key))
    except (ValueError, OSError):
        return None
