"""Flotilla's API: the boundary for people, pipelines and ITSM tools (FastAPI).

Every route but /healthz, /openapi.json and /docs needs an authenticated principal
(starters/api_auth.py: API tokens, OIDC ID tokens, the webhook's signed requests or shared
token) and is limited by the access policy (fleet/access.py) to the caller's teams'
clusters. Every call is appended to the audit trail (fleet/store.py) with its principal,
action, target and result. The OpenAPI schema is generated from the pydantic models.

    GET  /healthz, /livez, /readyz, /metrics   probes and Prometheus metrics (public)
    GET  /overview, /v1/overview               the fleet page (public) and its data
    GET  /v1/whoami                            the caller, its teams and roles
    GET  /v1/clusters[?selector=]              the clusters the caller may see
    GET  /v1/clusters/{name}                   one of them
    POST /v1/clusters, /v1/clusters/{name}/offboard   onboard, offboard (admin)
    GET  /v1/certs[?selector=], /v1/certs/{name}   last certificate scan reports
    POST /v1/rollouts                          start (header Idempotency-Key required)
    GET  /v1/operations[?kind=&running=]       rollouts the caller may see, newest first
    GET  /v1/operations/{id}                   a rollout's status, `progress`, result
    POST /v1/operations/{id}/approve           admit the waiting wave it names
    POST /v1/operations/{id}/pause|resume|abort|skip|rollback
    POST /v1/git/push                          sync a pushed commit (admin)
    POST /v1/dr/{app}/switchover|failover|failback|drill   a DR run (Idempotency-Key)
    GET  /v1/dr/{app}, /v1/dr/operations/{id}  DR record and runs
    POST|GET /v1/admin/tokens, POST /v1/admin/tokens/{id}/revoke   API tokens (admin)
    GET  /v1/audit?since=&limit=               the audit trail (admin)

A start runs as `rollout:<kind>:<Idempotency-Key>`; a repeated delivery answers 200 with
the existing run. Every error is `{"error": "<one line>"}`, never a traceback or a
credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import uvicorn
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from rich.console import Console
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from fleet import search
from fleet.access import (
    FOUR_EYES,
    OPEN,
    AccessError,
    Policy,
    Principal,
    Role,
    load_policy,
    open_principal,
)
from fleet.audit import AuditEntry, AuditRecord
from fleet.certs_models import CertReport
from fleet.config import Settings
from fleet.connect import connect
from fleet.dr import DrAppState, DrRequest, OpKind
from fleet.events import ChangeRef
from fleet.ids import offboard_id, onboard_id
from fleet.models import ClusterRecord, OnboardRequest, RecordsQuery
from fleet.rollout_models import (
    ApproveRequest,
    ControlRequest,
    Outcome,
    RolloutProgress,
    RolloutSpec,
    SkipRequest,
)
from fleet.store import Store, StoreError, database_url
from fleet.wave_specs import PlanError
from starters import cli_sync, ops, overview, rollouts, telemetry
from starters.api_auth import SECRET_ENV, TOKEN_ENV, Auth, HttpError
from starters.api_models import (
    AuditPage,
    CertReports,
    ClusterList,
    OperationList,
    OperationSummary,
    TokenCreateBody,
    TokenCreated,
    TokenList,
    WhoAmI,
)
from starters.errors import CliError, failure_message, usage
from starters.fleet_view import FleetOverview
from starters.inventory import get_cluster, list_clusters
from starters.webhook_models import (
    ApproveBody,
    ControlBody,
    ControlResponse,
    DrStartBody,
    ErrorResponse,
    GitPushBody,
    Health,
    OperationResponse,
    SkipBody,
    StartRequest,
    StartResponse,
)
from starters.webhook_signing import (
    KEY_HEADER,
    KEY_PATTERN,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from workflows.dr import RUNS, Switchover
from workflows.registry import OPERATIONS
from workflows.rollout import Rollout

log = logging.getLogger("flotilla.api")

ACCESS_ENV = "FLOTILLA_ACCESS_FILE"
# Probes, metrics and the overview page (static HTML; its data is /v1/overview) are public.
PUBLIC = {
    "/healthz",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/livez",
    "/readyz",
    "/metrics",
    "/overview",
}
CONTROLS = ("pause", "resume", "abort", "rollback")
DR_ACTIONS = ("switchover", "failover", "failback", "drill")
# Which role each control needs on every cluster of the run.
CONTROL_ROLE = {"approve": Role.APPROVER} | {a: Role.OPERATOR for a in (*CONTROLS, "skip")}
_KEY_RE = re.compile(KEY_PATTERN)
# The runs this service starts and serves; not cluster entities, children or dry runs.
_ROLLOUT_ID_RE = re.compile(r"^rollout:[a-z][a-z0-9-]{0,30}:" + KEY_PATTERN[1:])
QUERY_TIMEOUT = 5.0
UNAUTHENTICATED = "(unauthenticated)"
MAX_BODY = 1 << 20  # bytes; a start request is a few hundred
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Missing or bad Idempotency-Key, or malformed JSON",
        401: "Missing, bad or expired credentials",
        403: "The caller's roles or teams do not allow it (the clusters are named), "
        "or a pushed repository outside FLOTILLA_GIT_REPOS",
        404: "No such operation, cluster or application (or not one the caller may see)",
        409: "A replayed request, or the operation refused the control",
        422: "Invalid body or plan refused",
        503: "Temporal unreachable",
    }.items()
}
# Declared for the OpenAPI schema; the gate middleware below does the checking.
_BEARER = HTTPBearer(auto_error=False, description="An API token or an OIDC ID token")
_SIGNATURE = APIKeyHeader(
    name=SIGNATURE_HEADER,
    auto_error=False,
    scheme_name="signature",
    description=f"v1=<hex HMAC-SHA256> with {TIMESTAMP_HEADER} and {NONCE_HEADER} "
    "(docs/webhooks.md)",
)


class Temporal:
    """The Temporal client, connected on first use so the service starts (and answers
    503) while Temporal is down."""

    def __init__(self, client: Client | None = None, *, address: str | None = None):
        self._client = client
        self._address = address
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await connect(self._address)
                except Exception as exc:  # connection refused, DNS, TLS: all "unreachable"
                    raise HttpError(503, _unreachable(exc)) from None
            return self._client


@dataclass
class Service:
    temporal: Temporal
    auth: Auth
    policy: Policy
    store: Store | None
    task_queue: str | None

    @property
    def open(self) -> bool:
        return self.policy is OPEN

    async def audit(self, entry: AuditEntry) -> None:
        if self.store is None:
            return
        try:
            await asyncio.to_thread(self.store.append, entry)
        except Exception:  # the call's answer stands; the failure is in the log
            log.exception("could not append to the audit trail: %s %s", entry.action, entry.target)


def load_access(env: dict[str, str]) -> Policy:
    """The policy of FLOTILLA_ACCESS_FILE, or OPEN when it is unset; CliError (usage)
    naming every problem of a bad file."""
    path = env.get(ACCESS_ENV, "")
    if not path:
        return OPEN
    from pathlib import Path

    try:
        return load_policy(Path(path))
    except AccessError as exc:
        raise usage(str(exc)) from None


def create_app(
    *,
    auth: Auth,
    client: Client | None = None,
    address: str | None = None,
    task_queue: str | None = None,
    policy: Policy = OPEN,
    store: Store | None = None,
) -> FastAPI:
    """The API; `client` (tests) or a lazy connection to `address`. Tokens are accepted
    from `store` when `auth.store` is it."""
    if not auth.configured and not auth.anonymous:
        raise ValueError("no API credentials and anonymous access not allowed")
    service = Service(Temporal(client, address=address), auth, policy, store, task_queue)
    app = FastAPI(
        title="Flotilla API",
        version="1",
        description="Rollouts, controls, approvals, DR and reads for authenticated principals "
        "(docs/access.md, docs/webhooks.md).",
        redoc_url=None,
        responses=ERRORS,
    )
    app.state.flotilla = service
    app.add_exception_handler(HttpError, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _starlette_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(RPCError, _rpc_error)  # type: ignore[arg-type]
    app.add_exception_handler(ConnectionError, _unreachable_error)
    app.add_exception_handler(TimeoutError, _unreachable_error)
    app.add_middleware(Gate, service=service)
    app.add_middleware(Metered)
    app.include_router(_routes())
    return app


class Site:
    """A running uvicorn server; `cleanup()` stops it."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]):
        self._server = server
        self._task = task

    async def cleanup(self) -> None:
        self._server.should_exit = True
        await self._task


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the caller decides when to stop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def start_site(app: FastAPI, *, host: str, port: int) -> tuple[Site, str]:
    """Serves `app`; returns the site (to clean up) and the base URL (port 0: chosen)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (e.g. the port is taken)
            raise OSError(f"could not listen on {host}:{port}")
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    return Site(server, task), f"http://{bound[0]}:{bound[1]}"


async def serve(*, host: str, port: int, insecure_no_auth: bool, console: Console) -> None:
    """`flotilla api serve` (and `flotilla webhook serve`): runs until SIGINT/SIGTERM."""
    import os

    env = dict(os.environ)
    policy = load_access(env)
    settings = Settings.from_env()
    try:
        store = Store(database_url(env, settings.state_dir))
    except StoreError as exc:
        raise CliError(str(exc)) from None
    auth = Auth.from_env(anonymous=insecure_no_auth, store=store)
    if policy is OPEN and not (auth.secret or auth.token or auth.oidc) and not insecure_no_auth:
        raise usage(
            f"set {ACCESS_ENV} (roles and teams; API tokens and OIDC), {SECRET_ENV} (HMAC "
            f"signatures) or {TOKEN_ENV} (bearer token), or pass --insecure-no-auth to "
            "accept unauthenticated requests"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if policy is OPEN:
        log.warning("no %s: every authenticated caller may do everything", ACCESS_ENV)
    site, url = await start_site(
        create_app(auth=auth, policy=policy, store=store), host=host, port=port
    )
    console.print(f"flotilla api listening on {url}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await site.cleanup()
        store.close()


# ---------------------------------------------------------------- the gate


class Gate:
    """Authenticates every non-public request (reading its body for signatures), puts the
    principal in `request.state`, and appends the call to the audit trail when it ends.
    An unexpected exception becomes a 500 with one line; the log has the details."""

    def __init__(self, app: Any, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC:
            return await self.app(scope, receive, send)
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY:
                return await _send_json(send, 413, f"request body over {MAX_BODY} bytes")
        body = b"".join(chunks)
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            raw_path += "?" + scope["query_string"].decode("latin-1")
        headers = _Headers(scope["headers"])
        state = scope.setdefault("state", {})
        started: dict[str, Any] = {"status": 0, "error": ""}

        async def record(send_message: Any) -> None:
            if send_message["type"] == "http.response.start":
                started["status"] = send_message["status"]
            elif send_message["type"] == "http.response.body" and started["status"] >= 400:
                with contextlib.suppress(ValueError, AttributeError):
                    started["error"] = json.loads(send_message.get("body", b"")).get("error", "")
            await send(send_message)

        try:
            who = await self.service.auth.principal(scope["method"], raw_path, headers, body)
            if self.service.open:
                who = open_principal(who.name, who.via)
            state["principal"] = who
        except HttpError as exc:
            await _send_json(record, exc.status, exc.message)
            await self._audit(scope, UNAUTHENTICATED, started)
            return None
        except Exception:  # e.g. the identity provider's discovery document is unreachable
            log.exception("cannot check the credentials of %s %s", scope["method"], scope["path"])
            await _send_json(record, 503, "cannot check credentials now; retry later")
            await self._audit(scope, UNAUTHENTICATED, started)
            return None

        async def replay() -> Any:
            nonlocal body
            chunk, body = body, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        try:
            await self.app(scope, replay, record)
        except Exception:
            log.exception("internal error in %s %s", scope["method"], scope["path"])
            if not started["status"]:
                await _send_json(record, 500, "internal error; the API log has the details")
        await self._audit(scope, who.name, started)
        return None

    async def _audit(self, scope: Any, principal: str, started: dict[str, Any]) -> None:
        state = scope.get("state", {})
        endpoint = scope.get("endpoint")
        status = int(started["status"])
        result = {401: "unauthenticated", 403: "denied"}.get(status) or (
            "ok" if status < 400 else "error" if status >= 500 else "refused"
        )
        entry = AuditEntry(
            at=datetime.now(UTC),
            principal=principal,
            action=state.get("action") or getattr(endpoint, "__name__", "") or "unrouted",
            target=state.get("target") or scope["path"],
            result=result,
            detail=f"{status} {started['error']}".strip()[:500],
            workflow_id=state.get("workflow_id", ""),
            clusters=state.get("clusters", {}),
        )
        await self.service.audit(entry)
        level = logging.INFO if status < 500 else logging.WARNING
        log.log(level, "%s %s %s -> %d", principal, scope["method"], scope["path"], status)


class Metered:
    """Counts every answer in API_REQUESTS/API_SECONDS (starters/telemetry.py) by route
    pattern, so ids in paths do not become labels."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        code = {"status": 500}

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                code["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = _route_pattern(scope).replace(":path}", "}")
            method = scope["method"]
            telemetry.API_REQUESTS.labels(route, method, str(code["status"])).inc()
            telemetry.API_SECONDS.labels(route, method).observe(time.monotonic() - started)
        return None


def _route_pattern(scope: Any) -> str:
    """The matched route's path pattern; requests refused before routing (401) are
    matched here."""
    route = scope.get("route")
    if route is None and "app" in scope:
        route = _match(scope["app"].router.routes, scope)
    return str(getattr(route, "path", "") or "unmatched")


def _match(routes: Iterable[Any], scope: Any) -> Any:
    for route in routes:
        nested = getattr(route, "original_router", None)  # an included router
        found = _match(nested.routes, scope) if nested is not None else None
        if found is None and nested is None and route.matches(scope)[0] == Match.FULL:
            found = route
        if found is not None:
            return found
    return None


class _Headers:
    """Case-insensitive header lookup over ASGI header pairs."""

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]]):
        self._map = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in pairs}

    def get(self, name: str, default: str = "") -> str:
        return self._map.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map


async def _send_json(send: Callable[[Any], Awaitable[None]], status: int, message: str) -> None:
    body = ErrorResponse(error=message).model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- routes


def _service(request: Request) -> Service:
    service: Service = request.app.state.flotilla
    return service


def _caller(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


Caller = Annotated[Principal, Depends(_caller)]
Svc = Annotated[Service, Depends(_service)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias=KEY_HEADER,
        description="The run's id (1-100 letters, digits, '.', '_', '-'); part of the signature",
    ),
]


def _routes() -> Any:
    from fastapi import APIRouter

    public = APIRouter()
    router = APIRouter(dependencies=[Depends(_BEARER), Depends(_SIGNATURE)])

    @public.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health()

    @public.get("/livez", response_class=PlainTextResponse)
    async def livez() -> str:
        return "ok\n"

    @public.get("/readyz", response_class=PlainTextResponse, responses={503: {}})
    async def readyz(svc: Svc) -> PlainTextResponse:
        """Ready when Temporal answers a health check."""
        try:
            client = await svc.temporal.client()
        except HttpError as exc:
            return PlainTextResponse(f"not ready: {exc.message}\n", status_code=503)
        why = await telemetry.temporal_check(client)()
        if why:
            return PlainTextResponse(f"not ready: {why}\n", status_code=503)
        return PlainTextResponse("ok\n")

    @public.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """This process's Prometheus metrics (text format)."""
        body = await telemetry.exposition()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @public.get("/overview", response_class=HTMLResponse)
    async def overview_page() -> HTMLResponse:
        """The fleet overview page: static, it loads /v1/overview with the caller's token."""
        return HTMLResponse(overview.PAGE, headers=overview.PAGE_HEADERS)

    @router.get("/v1/overview", response_model=FleetOverview)
    async def overview_data(
        request: Request, who: Caller, svc: Svc, selector: str = ""
    ) -> FleetOverview:
        """Every cluster the caller may see and the running operations; `selector`
        narrows it (400 if malformed)."""
        _mark(request, "overview.read", selector or "(all)")
        client = await svc.temporal.client()

        def visible(labels: dict[str, str]) -> bool:
            return svc.policy.can(who, Role.VIEWER, labels)

        try:
            return await overview.overview_data(client, selector, visible)
        except overview.BadSelector as exc:
            raise HttpError(400, f"bad selector: {exc}") from None

    @router.get("/v1/whoami", response_model=WhoAmI)
    async def whoami(who: Caller, svc: Svc) -> WhoAmI:
        teams = {t: sorted(r.value for r in roles) for t, roles in svc.policy.teams_of(who).items()}
        return WhoAmI(
            name=who.name,
            via=who.via,
            groups=[g for g in who.groups if g != "*open*"],
            admin=svc.policy.is_admin(who),
            teams=teams,
        )

    @router.get("/v1/clusters", response_model=ClusterList)
    async def clusters_list(
        request: Request,
        who: Caller,
        svc: Svc,
        selector: str = "",
        include_offboarded: bool = False,
    ) -> ClusterList:
        _mark(request, "clusters.list", selector or "(all)")
        _selector_or_422(selector)
        client = await svc.temporal.client()
        records = await list_clusters(
            client, RecordsQuery(selector=selector, include_offboarded=include_offboarded)
        )
        visible = [r for r in records if svc.policy.can(who, Role.VIEWER, r.labels)]
        return ClusterList(clusters=sorted(visible, key=lambda r: r.name))

    @router.get("/v1/clusters/{name}", response_model=ClusterRecord)
    async def clusters_show(request: Request, name: str, who: Caller, svc: Svc) -> ClusterRecord:
        _mark(request, "clusters.show", name)
        record = await get_cluster(await svc.temporal.client(), name)
        if record is None or not svc.policy.can(who, Role.VIEWER, record.labels):
            raise HttpError(404, f"no cluster {name[:100]!r} you may see")
        _mark(request, "clusters.show", name, {name: record.labels})
        return record

    @router.post("/v1/clusters", response_model=StartResponse, status_code=201)
    async def clusters_onboard(
        request: Request, body: OnboardRequest, who: Caller, svc: Svc
    ) -> JSONResponse:
        """Onboard a cluster (admin): the credential reference must resolve on the worker.
        A run already in progress for it is joined (200)."""
        from starters.inventory import onboard

        _mark(request, "clusters.onboard", body.name, {body.name: body.labels})
        _require_admin(svc, who, "onboard clusters")
        client = await svc.temporal.client()
        existing = await _describe(client, onboard_id(body.name))
        running = existing is not None and existing.status == WorkflowExecutionStatus.RUNNING
        try:
            await onboard(client, body, wait=False, task_queue=svc.task_queue)
        except ValueError as exc:
            raise HttpError(422, str(exc)) from None
        desc = await _describe(client, onboard_id(body.name))
        assert desc is not None
        _mark(request, "clusters.onboard", body.name, {body.name: body.labels}, desc.id)
        return _json(_started(desc, created=not running), 200 if running else 201)

    @router.post("/v1/clusters/{name}/offboard", response_model=StartResponse, status_code=201)
    async def clusters_offboard(
        request: Request,
        name: str,
        who: Caller,
        svc: Svc,
        force: bool = False,
    ) -> JSONResponse:
        """Offboard a cluster (admin); `force` retires the record even when the cluster
        cannot be cleaned."""
        from starters.inventory import offboard

        _mark(request, "clusters.offboard", name)
        _require_admin(svc, who, "offboard clusters")
        client = await svc.temporal.client()
        record = await get_cluster(client, name)
        if record is None:
            raise HttpError(404, f"no cluster {name[:100]!r}")
        await offboard(client, name, wait=False, force=force, task_queue=svc.task_queue)
        desc = await _describe(client, offboard_id(name))
        assert desc is not None
        _mark(request, "clusters.offboard", name, {name: record.labels}, desc.id)
        return _json(_started(desc, created=True), 201)

    @router.get("/v1/certs", response_model=CertReports)
    async def certs_list(
        request: Request, who: Caller, svc: Svc, selector: str = ""
    ) -> CertReports:
        """The last certificate scan's report of every cluster the caller may see."""
        _mark(request, "certs.list", selector or "(all)")
        _selector_or_422(selector)
        client = await svc.temporal.client()
        records = await list_clusters(client, RecordsQuery(selector=selector))
        visible = [r for r in records if svc.policy.can(who, Role.VIEWER, r.labels)]
        gate = asyncio.Semaphore(16)

        async def one(record: ClusterRecord) -> CertReport | None:
            async with gate:
                return await _cert_report(client, record.name)

        reports = await asyncio.gather(*(one(r) for r in visible))
        unscanned = [r.name for r, rep in zip(visible, reports, strict=True) if rep is None]
        return CertReports(reports=[r for r in reports if r], unscanned=unscanned)

    @router.get("/v1/certs/{name}", response_model=CertReport)
    async def certs_show(request: Request, name: str, who: Caller, svc: Svc) -> CertReport:
        _mark(request, "certs.show", name)
        client = await svc.temporal.client()
        record = await get_cluster(client, name)
        if record is None or not svc.policy.can(who, Role.VIEWER, record.labels):
            raise HttpError(404, f"no cluster {name[:100]!r} you may see")
        _mark(request, "certs.show", name, {name: record.labels})
        report = await _cert_report(client, name)
        if report is None:
            raise HttpError(404, f"{name} was never scanned: run `flotilla certs scan {name}`")
        return report

    @router.post("/v1/rollouts", response_model=StartResponse, status_code=201)
    async def rollouts_start(
        request: Request,
        body: StartRequest,  # type: ignore[valid-type]
        who: Caller,
        svc: Svc,
        key: IdempotencyKey = "",
    ) -> JSONResponse:
        _mark(request, "rollouts.start", "")
        key = key.strip()
        if not key:
            raise HttpError(400, f"missing {KEY_HEADER} header (e.g. the pipeline run id)")
        if not _KEY_RE.match(key):
            raise HttpError(
                400, f"bad {KEY_HEADER} {key[:100]!r}: use 1-100 letters, digits, '.', '_', '-'"
            )
        spec = _spec(body, key)
        _mark(request, "rollouts.start", spec.workflow_id, workflow_id=spec.workflow_id)
        if not svc.policy.can_somewhere(who, Role.OPERATOR):
            raise HttpError(403, f"{who.name} may not start rollouts: it needs the operator role")
        client = await svc.temporal.client()
        existing = await _describe(client, spec.workflow_id)
        if existing is not None:
            await _require_run_role(svc, client, who, existing, Role.VIEWER, request)
            return _json(_started(existing, created=False), 200)
        try:
            plan = await rollouts.make_plan(client, spec)
        except PlanError as exc:
            raise HttpError(422, f"plan refused: {exc}") from None
        labels = await _labels(client, plan.cluster_names())
        _mark(request, "rollouts.start", spec.workflow_id, labels, spec.workflow_id)
        outside = svc.policy.refused(who, Role.OPERATOR, labels.items())
        if outside:
            raise HttpError(
                403,
                f"{who.name} may not start this rollout: its plan includes clusters outside "
                f"the teams it operates: {', '.join(outside)}",
            )
        four_eyes = svc.policy.needs_four_eyes(labels.values())
        plan = plan.model_copy(update={"spec": _with_starter(plan.spec, who.name, four_eyes)})
        try:
            await rollouts.check_plan(client, plan, task_queue=svc.task_queue)
        except rollouts.PlanRefused as exc:
            raise HttpError(422, exc.message) from None
        except rollouts.NoWorker as exc:
            raise HttpError(503, exc.message) from None
        try:
            handle = await rollouts.start_rollout(client, plan, task_queue=svc.task_queue)
        except CliError as exc:  # a concurrent delivery of the same key started it first
            existing = await _describe(client, spec.workflow_id)
            if existing is None:
                raise HttpError(409, exc.message) from None
            return _json(_started(existing, created=False), 200)
        response = StartResponse(
            workflow_id=handle.id,
            run_id=handle.result_run_id or "",
            status=Outcome.RUNNING.value,
            temporal_status=WorkflowExecutionStatus.RUNNING.name,
            created=True,
            clusters=plan.cluster_names(),
        )
        return _json(response, 201)

    @router.get("/v1/operations", response_model=OperationList)
    async def operations_list(
        request: Request, who: Caller, svc: Svc, kind: str = "", running: bool = False
    ) -> OperationList:
        _mark(request, "operations.list", kind or "(all rollouts)")
        if kind and kind not in {o.kind for o in OPERATIONS}:
            raise HttpError(422, f"unknown operation kind {kind[:40]!r}")
        client = await svc.temporal.client()
        query = f"WorkflowType = 'Rollout' AND {search.KIND.name} " + (
            f"= 'rollout:{kind}'" if kind else "STARTS_WITH 'rollout:'"
        )
        if running:
            query += " AND ExecutionStatus = 'Running'"
        found = []
        inventory = await _labels(client, None)
        async for wf in client.list_workflows(query, limit=200):
            # The run's CLUSTERS attribute (truncated past ~1.8 KB of names: listing
            # only; acting on a run checks every cluster of its progress).
            clusters = list(wf.typed_search_attributes.get(search.CLUSTERS) or [])
            clusters = clusters or await _run_clusters(client, wf.id, wf.run_id)
            if not any(svc.policy.can(who, Role.VIEWER, inventory.get(c, {})) for c in clusters):
                continue
            found.append(
                OperationSummary(
                    workflow_id=wf.id,
                    type=wf.workflow_type,
                    kind=wf.typed_search_attributes.get(search.KIND) or "",
                    status=ops.outcome(
                        wf.status, wf.typed_search_attributes.get(search.OUTCOME)
                    ).value,
                    started_at=wf.start_time,
                    closed_at=wf.close_time,
                )
            )
        return OperationList(operations=found)

    @router.get("/v1/operations/{workflow_id:path}", response_model=OperationResponse)
    async def operations_show(
        request: Request, workflow_id: str, who: Caller, svc: Svc
    ) -> OperationResponse:
        workflow_id = _rollout_id(workflow_id)
        _mark(request, "operations.show", workflow_id, workflow_id=workflow_id)
        client = await svc.temporal.client()
        desc = await _rollout(client, workflow_id)
        progress = await _require_run_role(svc, client, who, desc, Role.VIEWER, request)
        handle = client.get_workflow_handle(desc.id, run_id=desc.run_id)
        result: Any = None
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            with contextlib.suppress(Exception):
                result = await asyncio.wait_for(handle.result(follow_runs=False), QUERY_TIMEOUT)
        return OperationResponse(
            workflow_id=desc.id,
            run_id=desc.run_id,
            first_run_id=_first_run_id(desc),
            type=desc.workflow_type,
            status=_outcome(desc),
            temporal_status=_status(desc),
            progress=progress.model_dump(mode="json") if progress else None,
            result=result,
        )

    @router.post("/v1/operations/{workflow_id:path}/approve", response_model=ControlResponse)
    async def operations_approve(
        request: Request, workflow_id: str, body: ApproveBody, who: Caller, svc: Svc
    ) -> ControlResponse:
        note = _note(body.change_id, body.comment)
        if body.approver and body.approver != who.name:
            note = f"{note} (for {body.approver})".strip()
        approval = ApproveRequest(who=who.name, wave=body.wave, note=note)
        return await _control(request, svc, who, workflow_id, "approve", approval)

    @router.post("/v1/operations/{workflow_id:path}/skip", response_model=ControlResponse)
    async def operations_skip(
        request: Request, workflow_id: str, body: SkipBody, who: Caller, svc: Svc
    ) -> ControlResponse:
        skip = SkipRequest(cluster=body.cluster, who=who.name, reason=body.reason)
        return await _control(request, svc, who, workflow_id, "skip", skip)

    def control_route(action: str) -> None:
        async def control(
            request: Request,
            workflow_id: str,
            who: Caller,
            svc: Svc,
            body: Annotated[ControlBody | None, Body()] = None,
        ) -> ControlResponse:
            body = body or ControlBody()
            request_ = ControlRequest(who=who.name, reason=_note(body.change_id, body.reason))
            return await _control(request, svc, who, workflow_id, action, request_)

        control.__name__ = f"operations_{action}"
        router.post(
            f"/v1/operations/{{workflow_id:path}}/{action}",
            response_model=ControlResponse,
            summary=f"{action.capitalize()} a rollout",
            name=f"operations_{action}",
        )(control)

    for action in CONTROLS:
        control_route(action)

    @router.post("/v1/operations/{workflow_id:path}/{action}", include_in_schema=False)
    async def unknown_action(action: str) -> None:
        raise HttpError(
            404, f"unknown action {action[:40]!r}: approve, {', '.join(CONTROLS)} or skip"
        )

    @router.post("/v1/git/push", response_model=StartResponse, status_code=201)
    async def git_push(request: Request, body: GitPushBody, who: Caller, svc: Svc) -> JSONResponse:
        """One sync per pushed SHA (`rollout:sync:<sha12>`), however often it is
        delivered. A desired state may touch any cluster: admins only."""
        _mark(request, "git.push", f"{body.repo}@{body.after[:12]}")
        _require_admin(svc, who, "start a sync")
        try:
            cli_sync.check_push_repo(body.repo)
        except cli_sync.RepoNotAllowed as exc:
            raise HttpError(403, exc.message) from None
        client = await svc.temporal.client()
        started_by = f"{who.name} (push by {body.pusher})" if body.pusher else who.name
        try:
            workflow_id, created = await cli_sync.start_for_sha(
                client, body.repo, body.after, started_by=started_by, task_queue=svc.task_queue
            )
        except rollouts.NoWorker as exc:
            raise HttpError(503, exc.message) from None
        except CliError as exc:  # a bad commit, an unknown kind
            raise HttpError(422, exc.message) from None
        _mark(request, "git.push", f"{body.repo}@{body.after[:12]}", workflow_id=workflow_id)
        desc = await _describe(client, workflow_id)
        if desc is None:
            raise HttpError(409, f"{workflow_id} was not found after starting")
        return _json(_started(desc, created=created), 201 if created else 200)

    @router.post("/v1/dr/{app}/{action}", response_model=StartResponse, status_code=201)
    async def dr_start(
        request: Request,
        app: str,
        action: str,
        body: DrStartBody,
        who: Caller,
        svc: Svc,
        key: IdempotencyKey = "",
    ) -> JSONResponse:
        """Starts a DR run after the checks the CLI makes (unknown app 404, a cluster
        outside the policy 422, an operation running 409); the operator role on every
        cluster of the application's DR policy."""
        from activities.dr_observe import start_run
        from starters.cli_dr import check_request

        _mark(request, f"dr.{action}", app)
        if action not in DR_ACTIONS:
            raise HttpError(404, f"unknown DR action {action[:40]!r}: {', '.join(DR_ACTIONS)}")
        key = key.strip()
        if not key or not _KEY_RE.match(key):
            raise HttpError(400, f"missing or bad {KEY_HEADER} header (e.g. the change id)")
        kind = OpKind(action)
        workflow_id = f"{kind}:{app}:{key}"
        _mark(request, f"dr.{action}", app, workflow_id=workflow_id)
        client = await svc.temporal.client()
        state = await _dr_state(svc, client, who, app, Role.OPERATOR, request)
        existing = await _describe(client, workflow_id)
        if existing is not None:
            return _json(_started(existing, created=False), 200)
        try:
            await check_request(client, kind, app, body.target)
        except CliError as exc:
            status = 404 if "unknown application" in exc.message else 409
            raise HttpError(422 if exc.code == 2 else status, exc.message) from None
        reason = _note(body.change_id, body.reason)
        if body.who and body.who != who.name:
            reason = f"{reason} (for {body.who})".strip()
        req = DrRequest(
            app=app,
            target=body.target,
            who=who.name,
            reason=reason,
            force=body.force,
            change=_change(body.change_id),
        )
        queue = svc.task_queue or Settings.from_env().task_queue
        await start_run(client, kind, req, workflow_id=workflow_id, task_queue=queue)
        desc = await _describe(client, workflow_id)
        assert desc is not None and state is not None
        return _json(_started(desc, created=True), 201)

    @router.get("/v1/dr/operations/{workflow_id:path}", response_model=OperationResponse)
    async def dr_operation(
        request: Request, workflow_id: str, who: Caller, svc: Svc
    ) -> OperationResponse:
        _mark(request, "dr.operations.show", workflow_id, workflow_id=workflow_id)
        client = await svc.temporal.client()
        desc = await _describe(client, workflow_id)
        if desc is None or desc.workflow_type not in {run.__name__ for run in RUNS.values()}:
            raise HttpError(404, f"no DR run with workflow id {workflow_id[:120]!r}")
        app = workflow_id.split(":")[1] if workflow_id.count(":") >= 2 else ""
        await _dr_state(svc, client, who, app, Role.VIEWER, request)
        handle = client.get_workflow_handle(desc.id, run_id=desc.run_id)
        progress: Any = None
        with contextlib.suppress(Exception):  # no worker: status only
            found = await asyncio.wait_for(handle.query(Switchover.progress), QUERY_TIMEOUT)
            progress = found.model_dump(mode="json")
        return OperationResponse(
            workflow_id=desc.id,
            run_id=desc.run_id,
            first_run_id=_first_run_id(desc),
            type=desc.workflow_type,
            status=_outcome(desc),
            temporal_status=_status(desc),
            progress=progress,
        )

    @router.get("/v1/dr/{app}", response_model=DrAppState)
    async def dr_app(request: Request, app: str, who: Caller, svc: Svc) -> DrAppState:
        _mark(request, "dr.show", app)
        client = await svc.temporal.client()
        return await _dr_state(svc, client, who, app, Role.VIEWER, request)

    @router.post("/v1/admin/tokens", response_model=TokenCreated, status_code=201)
    async def tokens_create(
        request: Request, body: TokenCreateBody, who: Caller, svc: Svc
    ) -> TokenCreated:
        _mark(request, "tokens.create", body.name)
        store = _admin_store(svc, who, "create tokens")
        info, token = await asyncio.to_thread(store.create_token, body.name, body.groups)
        _mark(request, "tokens.create", f"{body.name} ({info.id})")
        return TokenCreated(info=info, token=token)

    @router.get("/v1/admin/tokens", response_model=TokenList)
    async def tokens_list(request: Request, who: Caller, svc: Svc) -> TokenList:
        _mark(request, "tokens.list", "")
        store = _admin_store(svc, who, "list tokens")
        return TokenList(tokens=await asyncio.to_thread(store.tokens))

    @router.post("/v1/admin/tokens/{token_id}/revoke", response_model=TokenList)
    async def tokens_revoke(request: Request, token_id: str, who: Caller, svc: Svc) -> TokenList:
        _mark(request, "tokens.revoke", token_id)
        store = _admin_store(svc, who, "revoke tokens")
        info = await asyncio.to_thread(store.revoke_token, token_id)
        if info is None:
            raise HttpError(404, f"no token with id {token_id[:40]!r}")
        _mark(request, "tokens.revoke", f"{info.name} ({info.id})")
        return TokenList(tokens=[info])

    @router.get("/v1/audit", response_model=AuditPage)
    async def audit_list(
        request: Request,
        who: Caller,
        svc: Svc,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> AuditPage:
        _mark(request, "audit.read", since.isoformat() if since else "(all)")
        store = _admin_store(svc, who, "read the audit trail")
        records: list[AuditRecord] = await asyncio.to_thread(
            store.records, since=since, limit=limit
        )
        return AuditPage(records=records)

    public.include_router(router)
    return public


# ---------------------------------------------------------------- authorization


def _mark(
    request: Request,
    action: str,
    target: str,
    clusters: dict[str, dict[str, str]] | None = None,
    workflow_id: str = "",
) -> None:
    """What the audit record of this call names."""
    request.state.action = action
    request.state.target = target
    if clusters is not None:
        request.state.clusters = clusters
    if workflow_id:
        request.state.workflow_id = workflow_id


def _require_admin(svc: Service, who: Principal, what: str) -> None:
    if not svc.policy.is_admin(who):
        raise HttpError(403, f"{who.name} may not {what}: it needs the admin role")


def _admin_store(svc: Service, who: Principal, what: str) -> Store:
    """The database, for an admin; 503 when the API runs without one (tests)."""
    _require_admin(svc, who, what)
    if svc.store is None:
        raise HttpError(503, "this API has no database configured")
    return svc.store


async def _labels(client: Client, names: list[str] | None) -> dict[str, dict[str, str]]:
    """Labels of the named clusters (all when None) from the inventory; a name without
    an active record maps to no labels, which only admins' roles cover."""
    records = await list_clusters(client, RecordsQuery(include_offboarded=True))
    found = {r.name: r.labels for r in records}
    if names is None:
        return found
    return {name: found.get(name, {}) for name in names}


async def _cert_report(client: Client, name: str) -> CertReport | None:
    """The cluster entity's last scan report; None when never scanned or not found."""
    from fleet.ids import cluster_id

    try:
        found = await client.get_workflow_handle(cluster_id(name)).query("cert_report")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return None if found is None else CertReport.model_validate(found)


async def _run_clusters(client: Client, workflow_id: str, run_id: str | None) -> list[str]:
    """The clusters of a rollout (its progress query); [] without a worker."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    with contextlib.suppress(Exception):
        progress = await asyncio.wait_for(handle.query(Rollout.progress), QUERY_TIMEOUT)
        return [c.name for c in progress.clusters]
    return []


async def _require_run_role(
    svc: Service,
    client: Client,
    who: Principal,
    desc: WorkflowExecutionDescription,
    role: Role,
    request: Request,
) -> RolloutProgress | None:
    """Returns the run's progress (None without a worker) when the caller may act on
    it: viewer on any of its clusters to read (404 otherwise, as if it did not exist),
    `role` on all of them to act (403 naming the others)."""
    handle = client.get_workflow_handle(desc.id, run_id=desc.run_id)
    progress: RolloutProgress | None = None
    with contextlib.suppress(Exception):  # no such query or no worker: status only
        progress = await asyncio.wait_for(handle.query(Rollout.progress), QUERY_TIMEOUT)
    names = [c.name for c in progress.clusters] if progress else None
    if names is None:  # no worker: the CLUSTERS attribute
        names = list(desc.typed_search_attributes.get(search.CLUSTERS) or [])
    labels = await _labels(client, names)
    _mark(request, request.state.action, desc.id, labels, desc.id)
    if not any(svc.policy.can(who, Role.VIEWER, lbl) for lbl in labels.values()) and not (
        svc.policy.is_admin(who)
    ):
        raise HttpError(404, f"no rollout with workflow id {desc.id!r}")
    outside = svc.policy.refused(who, role, labels.items())
    if outside:
        raise HttpError(
            403,
            f"{who.name} may not {request.state.action.split('.')[-1]} {desc.id}: it needs "
            f"the {role.value} role on {', '.join(outside)}",
        )
    return progress


async def _dr_state(
    svc: Service, client: Client, who: Principal, app: str, role: Role, request: Request
) -> DrAppState:
    from activities.dr_records import get_app

    state = await get_app(client, app)
    if state is None:
        raise HttpError(404, f"unknown application {app[:100]!r}: no DR policy you may see")
    labels = await _labels(client, [m.cluster for m in state.policy.members])
    request.state.clusters = labels
    if not any(svc.policy.can(who, Role.VIEWER, lbl) for lbl in labels.values()) and not (
        svc.policy.is_admin(who)
    ):
        raise HttpError(404, f"unknown application {app[:100]!r}: no DR policy you may see")
    outside = svc.policy.refused(who, role, labels.items())
    if outside:
        raise HttpError(
            403, f"{who.name} needs the {role.value} role on {', '.join(outside)} for {app}"
        )
    return state


async def _control(
    request: Request, svc: Service, who: Principal, text: str, action: str, control: Any
) -> ControlResponse:
    workflow_id = _rollout_id(text)
    _mark(request, f"operations.{action}", workflow_id, workflow_id=workflow_id)
    client = await svc.temporal.client()
    desc = await _rollout(client, workflow_id)
    await _require_run_role(svc, client, who, desc, CONTROL_ROLE[action], request)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise HttpError(409, f"{desc.id} is {_status(desc).lower()}; no controls apply")
    try:
        event = await rollouts.control(client, desc.id, action, control)
    except WorkflowUpdateFailedError as exc:
        message = failure_message(exc)
        # The run enforces four-eyes itself (workflows/rollout.py); here it is a 403.
        raise HttpError(403 if FOUR_EYES in message else 409, message) from None
    return ControlResponse(workflow_id=desc.id, **event.model_dump())


def _with_starter(spec: RolloutSpec, starter: str, four_eyes: bool) -> RolloutSpec:
    """The spec as the run records it: who started it and whether four-eyes applies."""
    return spec.model_copy(update={"started_by": starter, "four_eyes": four_eyes})


# ---------------------------------------------------------------- errors


async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
    return _error(exc.status, exc.message)


async def _starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        reason = (bad_json[0].get("ctx") or {}).get("error", "JSON decode error")
        return _error(400, f"malformed JSON: {reason}")
    return _error(422, _summary(errors))


async def _rpc_error(request: Request, exc: RPCError) -> JSONResponse:
    return _error(_rpc_status(exc), failure_message(exc))


async def _unreachable_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, _unreachable(exc))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=message).model_dump(), status_code=status)


def _summary(errors: Iterable[Any]) -> str:
    """All validation errors on one line: `field: message; other: message`."""
    kinds = {operation.kind for operation in OPERATIONS}
    parts = []
    for error in errors:
        # Union members (the operation kinds) come first in the location; drop the tag.
        location = [str(p) for p in error["loc"] if p not in kinds]
        if location[:1] in (["body"], ["query"], ["header"], ["path"]):
            location = location[1:]
        where = ".".join(location) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "invalid request: " + "; ".join(parts)


# ---------------------------------------------------------------- helpers


def _selector_or_422(selector: str) -> None:
    from fleet.selectors import SelectorError, parse_selector

    try:
        parse_selector(selector)
    except SelectorError as exc:
        raise HttpError(422, f"bad label selector: {exc}") from None


def _spec(body: Any, key: str) -> RolloutSpec:
    """The spec of a start body (StartRequest); 422 naming every problem."""
    try:
        return RolloutSpec(
            id=key,
            selector=body.selector,
            waves=body.waves,
            operation=body.operation,
            options=body.options,
            change=body.change,
        )
    except ValidationError as exc:
        raise HttpError(422, _summary(exc.errors())) from None


def _change(text: str) -> ChangeRef | None:
    """A change id as a reference (a bare id is ServiceNow's); 422 when malformed."""
    if not text:
        return None
    try:
        return ChangeRef.model_validate(text)
    except ValidationError:
        raise HttpError(422, f"change_id {text[:80]!r}: expected system:ID or an ITSM id") from None


def _rollout_id(text: str) -> str:
    """The workflow id of `rollout:<kind>:<key>` or `<kind>:<key>`; 404 for any other id
    (cluster entities, child runs, dry runs: the API serves the rollouts it starts)."""
    workflow_id = rollouts.workflow_id(text)
    if not _ROLLOUT_ID_RE.match(workflow_id):
        raise HttpError(
            404,
            f"{text[:120]!r} is not a rollout id: expected rollout:<kind>:<key> or <kind>:<key>",
        )
    return workflow_id


async def _rollout(client: Client, workflow_id: str) -> WorkflowExecutionDescription:
    """The latest run of rollout `workflow_id`; 404 when there is none."""
    desc = await _describe(client, workflow_id)
    if desc is None or desc.workflow_type != "Rollout":
        raise HttpError(404, f"no rollout with workflow id {workflow_id!r}")
    return desc


async def _describe(client: Client, workflow_id: str) -> WorkflowExecutionDescription | None:
    """The latest run of `workflow_id`, None when there is none."""
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


def _started(desc: WorkflowExecutionDescription, *, created: bool) -> StartResponse:
    return StartResponse(
        workflow_id=desc.id,
        run_id=_first_run_id(desc),
        status=_outcome(desc),
        temporal_status=_status(desc),
        created=created,
    )


def _first_run_id(desc: WorkflowExecutionDescription) -> str:
    """The id of the chain's first run: what the start returned, before continue-as-new."""
    return desc.raw_description.workflow_execution_info.first_run_id or desc.run_id


def _status(desc: WorkflowExecutionDescription) -> str:
    return (desc.status or WorkflowExecutionStatus.RUNNING).name


def _outcome(desc: WorkflowExecutionDescription) -> str:
    """The run's outcome (starters/ops.py): what to trust, unlike Temporal's COMPLETED."""
    return ops.outcome(desc.status, desc.typed_search_attributes.get(search.OUTCOME)).value


def _note(change_id: str, text: str) -> str:
    """`change CHG0012345: text` when a change id is given, so the report names it."""
    if not change_id:
        return text
    return f"change {change_id}: {text}" if text else f"change {change_id}"


def _rpc_status(exc: RPCError) -> int:
    return {
        RPCStatusCode.NOT_FOUND: 404,
        RPCStatusCode.INVALID_ARGUMENT: 400,
        RPCStatusCode.ALREADY_EXISTS: 409,
        RPCStatusCode.FAILED_PRECONDITION: 409,
        RPCStatusCode.UNAVAILABLE: 503,
        RPCStatusCode.DEADLINE_EXCEEDED: 503,
    }.get(exc.status, 502)


def _unreachable(exc: BaseException) -> str:
    text = str(exc).strip()
    if "refused" in text.lower():
        reason = "connection refused"
    elif isinstance(exc, TimeoutError) or "timed out" in text.lower():
        reason = "timed out"
    else:
        reason = text.splitlines()[0][:100] if text else type(exc).__name__
    return f"Temporal is unreachable ({reason}); retry later"


def _json(model: BaseModel, status: int) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)
