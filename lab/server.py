"""The HTTPS front of the lab: one aiohttp application, one listening socket per cluster.

A request's cluster is identified by the local port it arrived on. Middleware applies the
cluster's HTTP-level faults (dark hang, slow, flaky), authenticates the bearer token and
turns `ApiError` into `Status` bodies. A dark/refuse cluster has its socket closed and its
open connections aborted, so clients see ECONNREFUSED until the fault is cleared.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from lab.api import discovery, openapi, registry
from lab.api.handlers import ResourceHandler, json_response, parse_path, status_body
from lab.auth import User, bearer_token
from lab.cluster import Cluster
from lab.store import ApiError

log = logging.getLogger(__name__)

_HEALTH = {"/healthz", "/readyz", "/livez"}
_FLAKY_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}

CLUSTER = web.RequestKey("cluster", Cluster)
USER = web.RequestKey("user", User)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiServer:
    """Serves every cluster registered with `listen`; `stop_listening` closes one."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, *, seed: int = 0):
        self._ssl = ssl_context  # for clusters without their own TLS (`Cluster.tls`)
        self._by_port: dict[int, Cluster] = {}
        self._random = random.Random(seed)
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )

    async def start(self) -> None:
        await self._runner.setup()

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def listen(self, cluster: Cluster) -> None:
        """Starts serving `cluster` on its port (an ephemeral one when the port is 0), with
        its own TLS (a `ServingTLS` stands in for the SSLContext: asyncio only calls its
        `wrap_bio`)."""
        site = web.TCPSite(
            self._runner,
            "127.0.0.1",
            cluster.port,
            ssl_context=cast(ssl.SSLContext, cluster.tls) if cluster.tls else self._ssl,
            reuse_address=True,
            backlog=512,
        )
        await site.start()
        cluster.site = site
        cluster.port = site.port
        self._by_port[cluster.port] = cluster

    async def stop_listening(self, cluster: Cluster, *, forget: bool = False) -> None:
        """Closes the cluster's socket and aborts its open connections."""
        if cluster.site is not None:
            await cluster.site.stop()
            cluster.site = None
        server = self._runner.server
        for conn in server.connections if server else []:
            transport = conn.transport
            if transport is not None and _local_port(transport) == cluster.port:
                transport.abort()
        if forget:
            self._by_port.pop(cluster.port, None)

    # ---- request pipeline --------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        cluster = self._by_port.get(_local_port(request.transport))
        if cluster is None:
            return json_response(
                status_body(
                    ApiError(503, "ServiceUnavailable", "no cluster is served on this port")
                ),
                503,
            )
        if cluster.contacted is not None:
            hook, cluster.contacted = cluster.contacted, None
            hook()
        faults = cluster.faults
        if faults:
            if faults.get("dark", {}).get("mode") == "hang":
                await cluster.released.wait()
            if "slow" in faults:
                await asyncio.sleep(float(faults["slow"].get("latency_ms", 0)) / 1000)
            flaky = faults.get("flaky")
            if flaky and self._random.random() < float(flaky.get("rate", 0)):
                code = int(self._random.choice(flaky.get("codes") or [500]))
                error = ApiError(
                    code,
                    _FLAKY_REASONS.get(code, "InternalError"),
                    f"lab: injected flaky failure ({code})",
                )
                headers = {"Retry-After": "1"} if code == 429 else None
                response = json_response(status_body(error), code)
                if headers:
                    response.headers.update(headers)
                return response
        if request.path in _HEALTH:
            return web.Response(text="ok")
        user = cluster.authenticate(bearer_token(request.headers.get("Authorization")))
        if user is None:
            return json_response(status_body(ApiError(401, "Unauthorized", "Unauthorized")), 401)
        request[CLUSTER], request[USER] = cluster, user
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(status_body(exc), exc.code)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a lab bug: answer like an API server, keep serving
            log.exception("internal error serving %s %s", request.method, request.path)
            error = ApiError(500, "InternalError", f"lab internal error: {exc}")
            return json_response(status_body(error), 500)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        cluster, user = request[CLUSTER], request[USER]
        store, path = cluster.store, request.path.rstrip("/") or "/"
        if path == "/version":
            return json_response(
                discovery.version_info(discovery.cluster_version(store, cluster.version))
            )
        if path == "/openapi/v3":
            return json_response(openapi.root(registry.served(store)))
        if path.startswith("/openapi/v3/"):
            group, version = _group_version(path.removeprefix("/openapi/v3/"))
            return json_response(openapi.document(registry.served(store), group, version))
        if path.startswith("/openapi"):
            raise ApiError(404, "NotFound", "the lab serves no OpenAPI v2 document")
        target = parse_path(path)
        if target is not None:
            return await ResourceHandler(request, store=store, user=user, target=target).handle()
        if request.method != "GET":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        resources = registry.served(store)
        aggregated = discovery.wants_aggregated(request.headers.get("Accept", ""))
        parts = [p for p in path.split("/") if p]
        body = None
        if parts == ["api"]:
            if aggregated:
                return _aggregated(discovery.aggregated(resources, core=True))
            body = discovery.api_versions()
        elif parts == ["apis"]:
            if aggregated:
                return _aggregated(discovery.aggregated(resources, core=False))
            body = discovery.api_group_list(resources)
        elif len(parts) == 2 and parts[0] == "api":
            body = discovery.resource_list(resources, "", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            body = discovery.api_group(resources, parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            body = discovery.resource_list(resources, parts[1], parts[2])
        if body is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return json_response(body)


def _aggregated(body: object) -> web.Response:
    response = json_response(body)
    response.headers["Content-Type"] = discovery.AGGREGATED
    return response


def _group_version(prefix: str) -> tuple[str, str]:
    parts = prefix.split("/")
    if len(parts) == 2 and parts[0] == "api":
        return "", parts[1]
    if len(parts) == 3 and parts[0] == "apis":
        return parts[1], parts[2]
    raise ApiError(404, "NotFound", f"no OpenAPI document for {prefix}")


def _local_port(transport: asyncio.BaseTransport | None) -> int:
    if transport is None:
        return 0
    sockname = transport.get_extra_info("sockname")
    return int(sockname[1]) if sockname else 0
