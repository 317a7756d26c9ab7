"""The lab's admin API: plain HTTP JSON on 127.0.0.1, over a running `Lab`.

    GET    /clusters                         workload clusters with versions and faults
    POST   /clusters {name, labels, version?}  add a workload cluster (201)
    DELETE /clusters/{name}                  remove one
    POST   /clusters/{name}/faults {kind, ...params}   inject a fault
    DELETE /clusters/{name}/faults[/{kind}]  clear all faults or one kind
    POST   /clusters/{name}/users {name, verbs, resources?} -> {token}
    GET    /clusters/{name}/certificates     served chain, trust, consumers' verdicts
    POST   /clusters/{name}/certificates {expiresInDays}   re-issue the serving cert
    POST   /clusters/{name}/cert-manager/certificates {namespace, name, expiresInDays,
           secretName?, duration?, renewBefore?, dnsNames?}   seed a cert-manager Certificate
    /dr/apps, /dns/{name}, /workloads: disaster-recovery helpers (lab/dr_admin.py)

Errors are `{"error": message}` with 404 for an unknown cluster and 400 for bad input.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lab import dr_admin
from lab.runtime import Lab

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Maps the runtime's exceptions onto status codes: KeyError 404, ValueError 400."""
    try:
        return await handler(request)
    except KeyError as exc:
        return _error(404, str(exc.args[0]) if exc.args else "not found")
    except ValueError as exc:
        return _error(400, str(exc))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise ValueError("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("labels must be an object of strings")
    return value


class AdminServer:
    """Serves the admin API for `lab` on an ephemeral 127.0.0.1 port."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.url = ""
        app = web.Application(middlewares=[_errors])
        app.add_routes(
            [
                web.get("/clusters", self.list_clusters),
                web.post("/clusters", self.add_cluster),
                web.delete("/clusters/{name}", self.remove_cluster),
                web.post("/clusters/{name}/faults", self.set_fault),
                web.delete("/clusters/{name}/faults", self.clear_faults),
                web.delete("/clusters/{name}/faults/{kind}", self.clear_faults),
                web.post("/clusters/{name}/users", self.add_user),
                web.get("/clusters/{name}/certificates", self.certificates),
                web.post("/clusters/{name}/certificates", self.set_cert_expiry),
                web.post("/clusters/{name}/cert-manager/certificates", self.seed_certificate),
                *dr_admin.routes(lab),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()

    # ---- handlers ----------------------------------------------------------------------

    async def list_clusters(self, request: web.Request) -> web.Response:
        return web.json_response(self.lab.describe())

    async def add_cluster(self, request: web.Request) -> web.Response:
        body = await _body(request)
        name = body.get("name")
        version = body.get("version")
        if not isinstance(name, str) or (version is not None and not isinstance(version, str)):
            raise ValueError("a cluster needs a string name (and optionally a string version)")
        cluster = await self.lab.add_cluster(name, _labels(body.get("labels", {})), version)
        described = next(c for c in self.lab.describe() if c["name"] == cluster.name)
        return web.json_response(described, status=201)

    async def remove_cluster(self, request: web.Request) -> web.Response:
        await self.lab.remove_cluster(request.match_info["name"])
        return web.json_response({"removed": request.match_info["name"]})

    async def set_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _body(request)
        kind = body.pop("kind", None)
        if not isinstance(kind, str):
            raise ValueError("a fault needs a kind")
        await self.lab.set_fault(name, kind, body)
        return web.json_response(self._faults(name))

    async def clear_faults(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self.lab.clear_fault(name, request.match_info.get("kind"))
        return web.json_response(self._faults(name))

    async def add_user(self, request: web.Request) -> web.Response:
        body = await _body(request)
        verbs, resources = body.get("verbs", []), body.get("resources", ["*"])
        if not isinstance(verbs, list) or not isinstance(resources, list):
            raise ValueError("verbs and resources must be lists")
        user = body.get("name")
        if not isinstance(user, str):
            raise ValueError("a user needs a string name")
        token = self.lab.add_user(request.match_info["name"], user, verbs, resources)
        return web.json_response({"token": token}, status=201)

    async def certificates(self, request: web.Request) -> web.Response:
        return web.json_response(self.lab.certificates(request.match_info["name"]))

    async def set_cert_expiry(self, request: web.Request) -> web.Response:
        days = (await _body(request)).get("expiresInDays")
        if not isinstance(days, int | float) or isinstance(days, bool):
            raise ValueError("expiresInDays must be a number of days (negative: expired)")
        return web.json_response(self.lab.set_cert_expiry(request.match_info["name"], float(days)))

    async def seed_certificate(self, request: web.Request) -> web.Response:
        body = await _body(request)
        days = body.get("expiresInDays")
        if not isinstance(days, int | float) or isinstance(days, bool):
            raise ValueError("expiresInDays must be a number of days (negative: expired)")
        strings = {
            "namespace": "namespace",
            "name": "name",
            "secretName": "secret_name",
            "duration": "duration",
            "renewBefore": "renew_before",
        }
        options: dict[str, Any] = {}
        for field, option in strings.items():
            value = body.get(field)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{field} must be a string")
            if value:
                options[option] = value
        if "namespace" not in options or "name" not in options:
            raise ValueError("a certificate needs a namespace and a name")
        names = body.get("dnsNames")
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise ValueError("dnsNames must be a list of names")
            options["dns_names"] = names
        cert = self.lab.seed_certificate(request.match_info["name"], days=float(days), **options)
        return web.json_response(cert, status=201)

    def _faults(self, name: str) -> dict[str, Any]:
        return {"name": name, "faults": self.lab.clusters[name].faults}
