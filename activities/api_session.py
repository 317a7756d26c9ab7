"""One verified TLS connection to a cluster's API server that shows the served leaf and
carries a scan's reads (GET, JSON, HTTP/1.1 keep-alive): one handshake a cluster where the
Kubernetes client opened a second connection, and none of its per-request overhead.

It authenticates as the Kubernetes client would with the same kubeconfig context (its
bearer token, refreshed by its hook; its client certificate) and verifies the server with
the hub's CA data. It is only used when that verification succeeds and neither a proxy
nor a TLS server name applies;
otherwise `open_session` returns None and the caller reads through the Kubernetes client,
which then behaves as it always did (an insecure context still reads, a CA mismatch
fails). Credentials stay in this process: nothing here returns or logs them.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from fleet.certs_kubeconfig import HubView

# Client SSLContexts by (CA data, client certificate files): loading CA data costs more
# than a handshake, and a fleet shares few distinct ones. Bounded by clearing.
_contexts: dict[tuple[bytes, str, str], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()
_MAX_CONTEXTS = 4096


class ApiSession:
    """An open connection (use as a context manager); `leaf` is the served certificate."""

    def __init__(self, connection: http.client.HTTPSConnection, headers: dict[str, str]):
        self._connection = connection
        self._headers = headers
        self._broken: BaseException | None = None  # a failed exchange ends the connection
        sock = connection.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        if not der:
            raise ssl.SSLError("the server presented no certificate")
        self.leaf = x509.load_der_x509_certificate(der)

    def get(self, path: str) -> Any:
        """The decoded JSON body at `path`; raises ApiException for a non-2xx answer, and
        for every read after an I/O failure (a timeout, a reset) that same failure again
        (a hanging server costs one timeout, not one per read)."""
        if self._broken is not None:
            raise self._broken
        try:
            self._connection.request("GET", path, headers=self._headers)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._broken = exc
            self._connection.close()
            raise
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason)
        return json.loads(data) if data else None

    def __enter__(self) -> ApiSession:
        return self

    def __exit__(self, *_: object) -> None:
        self._connection.close()


def open_session(
    hub: HubView, api: ApiClient, *, connect_timeout: float, read_timeout: float
) -> ApiSession | None:
    """A verified connection to the hub's server for `api`'s credentials, or None when this
    path does not apply (no CA data, skip-verify, a proxy, a TLS server name, verification
    failed: the caller falls back to the Kubernetes client). Raises OSError/ssl.SSLError
    for a server that cannot be reached."""
    config = api.configuration
    if (
        not hub.ca_pem
        or hub.insecure
        or not config.verify_ssl
        or config.tls_server_name
        or _proxied(config)
    ):
        return None
    parts = urlsplit(hub.server)
    host, port = parts.hostname or "", parts.port or 443
    context = _context(hub.ca_pem, config.cert_file or "", config.key_file or "")
    connection = http.client.HTTPSConnection(host, port, timeout=connect_timeout, context=context)
    try:
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(read_timeout)
    except ssl.SSLCertVerificationError:
        connection.close()
        return None
    except BaseException:
        connection.close()
        raise
    headers = {"Accept": "application/json"}
    auth = config.auth_settings().get("BearerToken")
    if auth:
        headers["Authorization"] = str(auth["value"])
    try:
        return ApiSession(connection, headers)
    except BaseException:
        connection.close()
        raise


def _proxied(config: Any) -> bool:
    if not config.proxy:
        return False
    from kubernetes.client.rest import should_bypass_proxies

    return not should_bypass_proxies(config.host, config.no_proxy or "")


def _context(ca_pem: bytes, cert_file: str, key_file: str) -> ssl.SSLContext:
    key = (ca_pem, cert_file, key_file)
    with _contexts_lock:
        cached = _contexts.get(key)
    if cached is not None:
        return cached
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    with _contexts_lock:
        if len(_contexts) >= _MAX_CONTEXTS:
            _contexts.clear()
        _contexts[key] = context
    return context
