"""Cluster access for activities: turn a `CredentialRef` into a Kubernetes API client.

Credentials are read here, on the worker, and nowhere else; they never travel through
workflow inputs, results or errors. Use `api_error_message` to describe a failed call:
it names the cluster and status, never headers or tokens.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from fleet import kubeconfig
from fleet.models import CredentialRef

# Seconds for one API request: (connect, read). Activities retry; one call must not hang.
REQUEST_TIMEOUT = (5.0, 30.0)

POOL_SIZE = 64
_lock = threading.Lock()
# Clients by (kubeconfig source, the files' mtimes, context): rebuilt when a file changes.
_clients: dict[tuple[str, kubeconfig.Stamp, str], client.ApiClient] = {}


def api_client(ref: CredentialRef) -> client.ApiClient:
    """A cached API client for the reference, its kubeconfig resolved as fleet/kubeconfig.py
    documents (a `KUBECONFIG` list merges as kubectl merges it).

    Raises a non-retryable ApplicationError when the reference cannot be resolved
    (unknown kind, missing file, unknown context): retrying cannot fix it.
    """
    if ref.kind != "kubeconfig":
        raise ApplicationError(
            f"unsupported credential kind {ref.kind!r}", type="BadCredentialRef", non_retryable=True
        )
    source = kubeconfig.source_of(ref.kubeconfig)
    try:
        stamp = kubeconfig.stamp(source)
    except kubeconfig.KubeconfigError as exc:
        raise _bad_ref(f"kubeconfig {exc} on the worker") from None
    key = (source, stamp, ref.context)
    with _lock:
        cached = _clients.get(key)
        if cached is not None:
            return cached
        for old in [k for k in _clients if k[0] == source and k[1] != stamp]:
            del _clients[old]
        try:
            configuration = client.Configuration()
            config.load_kube_config_from_dict(
                kubeconfig.load(source),
                context=ref.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except kubeconfig.KubeconfigError as exc:
            raise _bad_ref(f"kubeconfig {exc}") from None
        except (config.ConfigException, OSError) as exc:
            raise _bad_ref(
                f"context {ref.context!r} not usable in {source}: {_first_line(exc)}"
            ) from None
        configuration.retries = urllib3.Retry(total=0)  # Temporal retries, not urllib3
        # Connections kept per cluster: as many as activities may use one client at once
        # (a management cluster serves every rotation; the default, 5 a core, made urllib3
        # discard connections and handshake again under 50 concurrent rotations).
        configuration.connection_pool_maxsize = POOL_SIZE
        api = client.ApiClient(configuration)
        _clients[key] = api
        return api


def heartbeat(*details: Any) -> None:
    """`activity.heartbeat`, except in a local activity (which has no heartbeat: its
    workflow task is its liveness), so one activity function serves both ways."""
    if not activity.info().is_local:
        activity.heartbeat(*details)


def _bad_ref(message: str) -> ApplicationError:
    return ApplicationError(message, type="BadCredentialRef", non_retryable=True)


def api_error_message(cluster: str, exc: Exception) -> str:
    """A one-line, secret-free description of a failed Kubernetes call."""
    if isinstance(exc, ApiException):
        return f"{cluster}: API answered {exc.status} {exc.reason}"
    return f"{cluster}: {type(exc).__name__}: {_first_line(exc)}"


def write_error(where: str, exc: ApiException, *, refused: str, type: str) -> ApplicationError:
    """The error for a failed write: when the API refused it (400, 403, 422: a retry cannot
    change that) non-retryable `type` reading "<refused>: <the API's message>"; otherwise
    retryable."""
    if exc.status in (400, 403, 422):
        return ApplicationError(f"{refused}: {status_message(exc)}", type=type, non_retryable=True)
    return ApplicationError(api_error_message(where, exc))


def status_message(exc: ApiException) -> str:
    """The `message` of the API's Status body (e.g. a webhook's reason), else the reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.reason))[:500]
    except ValueError:
        return str(exc.reason)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    timeout: tuple[float, float] = REQUEST_TIMEOUT,
) -> Any:
    """One JSON request to any API path (`/readyz`, `/api/v1/namespaces`, ...).

    Returns the decoded body (None when empty); raises ApiException for a non-2xx answer
    and urllib3 errors when the server cannot be reached in `timeout`.
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method, url, headers, body, _ = api.param_serialize(
        method=method,
        resource_path=path,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
    data = response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")
