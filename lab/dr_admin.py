"""The admin API's DR routes (docs/lab-dr.md, section 8): apps, DNS answers, workloads.

POST   /dr/apps {name, clusters, namespace?, dnsName?, ttl?}   seed an app (201)
GET    /dr/apps                          apps with each member's database state
GET    /dns/{name}                       the zone's answer (404 NXDOMAIN)
POST   /workloads {app, intervalMs?, timeoutMs?, probeMs?} -> {id}   start a client (201)
GET    /workloads/{id}                   its measurements so far
DELETE /workloads/{id}                   stop it, check RPO, final measurements
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from lab.dr import Dr, DrAppSpec
from lab.runtime import Lab


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise ValueError("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def _millis(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{key} must be a number of milliseconds")
    return float(value) / 1000


def routes(lab: Lab) -> list[web.RouteDef]:
    def dr() -> Dr:
        if lab.dr is None:
            raise ValueError("DR apps need the simulation")
        return lab.dr

    async def seed_app(request: web.Request) -> web.Response:
        body = await _body(request)
        name, clusters = body.get("name"), body.get("clusters")
        if not isinstance(name, str) or not isinstance(clusters, list):
            raise ValueError("a DR app needs a name and a list of clusters (primary first)")
        if not all(isinstance(c, str) for c in clusters):
            raise ValueError("clusters must be cluster names")
        namespace, dns_name, ttl = (
            body.get("namespace", ""),
            body.get("dnsName", ""),
            body.get("ttl", 5),
        )
        if not isinstance(namespace, str) or not isinstance(dns_name, str):
            raise ValueError("namespace and dnsName must be strings")
        if not isinstance(ttl, int) or isinstance(ttl, bool):
            raise ValueError("ttl must be a whole number of seconds")
        spec = DrAppSpec(name, tuple(clusters), namespace, dns_name, ttl)
        return web.json_response(await dr().seed_app(spec), status=201)

    async def list_apps(request: web.Request) -> web.Response:
        return web.json_response(dr().describe())

    async def resolve(request: web.Request) -> web.Response:
        answer = dr().resolve(request.match_info["name"])
        if answer is None:
            raise KeyError(f"NXDOMAIN: {request.match_info['name']}")
        return web.json_response(answer)

    async def start_workload(request: web.Request) -> web.Response:
        body = await _body(request)
        app = body.get("app")
        if not isinstance(app, str):
            raise ValueError("a workload needs the app's name")
        workload_id = dr().start_workload(
            app,
            interval=_millis(body, "intervalMs", 20),
            timeout=_millis(body, "timeoutMs", 500),
            probe=_millis(body, "probeMs", 100),
        )
        return web.json_response({"id": workload_id}, status=201)

    async def get_workload(request: web.Request) -> web.Response:
        return web.json_response(dr().workload(request.match_info["id"]).report())

    async def stop_workload(request: web.Request) -> web.Response:
        return web.json_response(await dr().stop_workload(request.match_info["id"]))

    return [
        web.post("/dr/apps", seed_app),
        web.get("/dr/apps", list_apps),
        web.get("/dns/{name}", resolve),
        web.post("/workloads", start_workload),
        web.get("/workloads/{id}", get_workload),
        web.delete("/workloads/{id}", stop_workload),
    ]
