"""The webhook service: CI pipelines start rollouts, ITSM tools approve their waves.

    POST /v1/rollouts                          start (header Idempotency-Key required)
    GET  /v1/operations/{id}                   status, `progress` query, result
    POST /v1/operations/{id}/approve           admit the waiting wave (ITSM approval)
    POST /v1/operations/{id}/pause|resume|abort
    GET  /healthz                              liveness, no authentication

A start runs as `rollout:<kind>:<Idempotency-Key>`; a repeated delivery finds that
workflow (running or closed) and answers 200 with it instead of starting a second run.
Plans are made and checked (the engine's dry run) before anything starts, so a bad plan is
refused with a 4xx. Every error is a JSON `{"error": "<one line>"}`, never a traceback.

Authentication: the HMAC-SHA256 of the raw body with FLOTILLA_WEBHOOK_SECRET
(`X-Flotilla-Signature: sha256=<hex>`) or `Authorization: Bearer <FLOTILLA_WEBHOOK_TOKEN>`.
Neither value is logged or passed to a workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from fleet.config import Settings
from fleet.connect import connect
from fleet.rollout_models import (
    AddonTarget,
    ApproveRequest,
    ControlRequest,
    K8sTarget,
    Operation,
    RolloutOptions,
    RolloutSpec,
)
from fleet.selectors import SelectorError, parse_selector
from fleet.versions import VersionError, parse_version
from fleet.waves import PlanError
from starters import rollouts
from starters.cli_rollout import parse_duration
from starters.errors import CliError, failure_message, usage
from starters.webhook_models import (
    START_BODY,
    AddonStart,
    ApproveBody,
    ControlBody,
    ControlResponse,
    ErrorResponse,
    K8sStart,
    OperationResponse,
    StartResponse,
)

log = logging.getLogger("flotilla.webhook")

SECRET_ENV = "FLOTILLA_WEBHOOK_SECRET"
TOKEN_ENV = "FLOTILLA_WEBHOOK_TOKEN"
SIGNATURE_HEADER = "X-Flotilla-Signature"
KEY_HEADER = "Idempotency-Key"
# Part of a workflow id and of URLs: no '/' (child ids use it) and nothing to escape.
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
QUERY_TIMEOUT = 5.0
# The plan check is a dry run on the worker; without a worker it would wait forever.
CHECK_TIMEOUT = 120.0

M = TypeVar("M", bound=BaseModel)


class HttpError(Exception):
    """An answer to the caller: a status and one readable line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Auth:
    """Accepted credentials. `anonymous` (only from --insecure-no-auth) lets every
    request in when neither a secret nor a token is set."""

    secret: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    anonymous: bool = False

    @classmethod
    def from_env(cls, *, anonymous: bool = False) -> Auth:
        return cls(
            secret=os.environ.get(SECRET_ENV, ""),
            token=os.environ.get(TOKEN_ENV, ""),
            anonymous=anonymous,
        )

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.token)

    def problem(self, headers: Any, body: bytes) -> str | None:
        """Why the request is not authenticated, or None when it is."""
        if not self.configured:
            return None if self.anonymous else "the webhook has no credentials configured"
        signature = headers.get(SIGNATURE_HEADER, "")
        bearer = headers.get("Authorization", "")
        if self.secret and signature:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
                return None
            return f"bad {SIGNATURE_HEADER}: expected sha256=<hex HMAC-SHA256 of the raw body>"
        if self.token and bearer.startswith("Bearer "):
            if hmac.compare_digest(bearer[len("Bearer ") :].strip().encode(), self.token.encode()):
                return None
            return "bad bearer token"
        ways = [f"{SIGNATURE_HEADER}: sha256=<hex>"] * bool(self.secret)
        ways += ["Authorization: Bearer <token>"] * bool(self.token)
        return f"missing credentials: send {' or '.join(ways)}"


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


def create_app(
    *,
    auth: Auth,
    client: Client | None = None,
    address: str | None = None,
    task_queue: str | None = None,
) -> web.Application:
    """The aiohttp application; `client` (tests) or a lazy connection to `address`."""
    if not auth.configured and not auth.anonymous:
        raise ValueError("no webhook credentials and anonymous access not allowed")
    api = Api(Temporal(client, address=address), task_queue=task_queue)
    app = web.Application(middlewares=[_errors, _authenticate(auth)])
    app.add_routes(
        [
            web.get("/healthz", api.healthz),
            web.post("/v1/rollouts", api.start),
            web.get("/v1/operations/{workflow_id}", api.operation),
            web.post("/v1/operations/{workflow_id}/{action}", api.control),
        ]
    )
    return app


async def start_site(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serves `app`; returns the runner (to clean up) and the base URL (port 0: chosen)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


async def serve(*, host: str, port: int, insecure_no_auth: bool, console: Console) -> None:
    """`flotilla webhook serve`: runs until SIGINT/SIGTERM."""
    auth = Auth.from_env(anonymous=insecure_no_auth)
    if not auth.configured and not insecure_no_auth:
        raise usage(
            f"set {SECRET_ENV} (HMAC signatures) and/or {TOKEN_ENV} (bearer token), "
            "or pass --insecure-no-auth to accept unauthenticated requests"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not auth.configured:
        log.warning("--insecure-no-auth: anyone who reaches this port can start rollouts")
    runner, url = await start_site(create_app(auth=auth), host=host, port=port)
    console.print(f"flotilla webhook listening on {url}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


# ---------------------------------------------------------------- handlers


class Api:
    def __init__(self, temporal: Temporal, *, task_queue: str | None):
        self._temporal = temporal
        self._task_queue = task_queue

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(self, request: web.Request) -> web.Response:
        key = request.headers.get(KEY_HEADER, "").strip()
        if not key:
            raise HttpError(400, f"missing {KEY_HEADER} header (e.g. the pipeline run id)")
        if not _KEY_RE.match(key):
            raise HttpError(
                400, f"bad {KEY_HEADER} {key[:100]!r}: use 1-100 letters, digits, '.', '_', '-'"
            )
        spec = _spec(await _body(request, START_BODY), key)
        client = await self._temporal.client()
        existing = await _describe(client, spec.workflow_id)
        if existing is not None:
            log.info("repeated delivery %s: returning %s", key, _ids(existing))
            return _json(_started(existing, created=False), 200)
        try:
            plan = await rollouts.make_plan(client, spec)
        except PlanError as exc:
            raise HttpError(422, f"plan refused: {exc}") from None
        check = rollouts.check_plan(client, plan, task_queue=self._task_queue)
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT)
        except WorkflowFailureError as exc:
            raise HttpError(422, failure_message(exc)) from None
        except TimeoutError:
            queue = self._task_queue or Settings.from_env().task_queue
            raise HttpError(
                503,
                f"the plan check got no answer in {CHECK_TIMEOUT:.0f}s: is a worker "
                f"polling task queue {queue!r}?",
            ) from None
        try:
            handle = await rollouts.start_rollout(client, plan, task_queue=self._task_queue)
        except CliError as exc:  # a concurrent delivery of the same key started it first
            existing = await _describe(client, spec.workflow_id)
            if existing is None:
                raise HttpError(409, exc.message) from None
            return _json(_started(existing, created=False), 200)
        run_id = handle.result_run_id or ""
        log.info(
            "started %s run %s (key %s): %d clusters",
            handle.id,
            run_id,
            key,
            len(plan.cluster_names()),
        )
        response = StartResponse(
            workflow_id=handle.id,
            run_id=run_id,
            status=WorkflowExecutionStatus.RUNNING.name,
            created=True,
            clusters=plan.cluster_names(),
        )
        return _json(response, 201)

    async def operation(self, request: web.Request) -> web.Response:
        workflow_id = request.match_info["workflow_id"]
        client = await self._temporal.client()
        desc = await _describe(client, workflow_id)
        if desc is None:
            raise HttpError(404, f"no operation with workflow id {workflow_id!r}")
        handle = client.get_workflow_handle(workflow_id, run_id=desc.run_id)
        progress: Any = None
        with contextlib.suppress(Exception):  # no such query or no worker: status only
            progress = await asyncio.wait_for(handle.query("progress"), QUERY_TIMEOUT)
        result: Any = None
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            with contextlib.suppress(Exception):
                result = await asyncio.wait_for(handle.result(follow_runs=False), QUERY_TIMEOUT)
        response = OperationResponse(
            workflow_id=desc.id,
            run_id=desc.run_id,
            first_run_id=_first_run_id(desc),
            type=desc.workflow_type,
            status=_status(desc),
            progress=progress if isinstance(progress, dict) else None,
            result=result,
        )
        return _json(response, 200)

    async def control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        workflow_id = rollouts.workflow_id(request.match_info["workflow_id"])
        control: ApproveRequest | ControlRequest
        if action == "approve":
            approve = await _body(request, TypeAdapter(ApproveBody))
            note = _note(approve.change_id, approve.comment)
            control = ApproveRequest(who=approve.approver, note=note)
        elif action in ("pause", "resume", "abort"):
            body = await _body(request, TypeAdapter(ControlBody))
            control = ControlRequest(who=body.who, reason=_note(body.change_id, body.reason))
        else:
            raise HttpError(404, f"unknown action {action!r}: approve, pause, resume or abort")
        client = await self._temporal.client()
        desc = await _describe(client, workflow_id)
        if desc is None:
            raise HttpError(404, f"no rollout with workflow id {workflow_id!r}")
        if desc.status != WorkflowExecutionStatus.RUNNING:
            raise HttpError(409, f"{workflow_id} is {_status(desc).lower()}; no controls apply")
        try:
            event = await rollouts.control(client, workflow_id, action, control)
        except WorkflowUpdateFailedError as exc:
            raise HttpError(409, failure_message(exc)) from None
        log.info("%s %s by %s: %s", action, _ids(desc), event.who, event.reason)
        response = ControlResponse(workflow_id=workflow_id, **event.model_dump())
        return _json(response, 200)


# ---------------------------------------------------------------- middleware


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes `{"error": "<one line>"}` with a fitting status."""
    try:
        return await handler(request)
    except HttpError as exc:
        status, message = exc.status, exc.message
    except web.HTTPException as exc:  # no such route, wrong method
        status, message = exc.status, exc.reason
    except RPCError as exc:
        status, message = _rpc_status(exc), failure_message(exc)
    except (ConnectionError, TimeoutError) as exc:
        status, message = 503, _unreachable(exc)
    except Exception:
        log.exception("internal error in %s %s", request.method, request.path)
        status, message = 500, "internal error; the webhook log has the details"
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s %s -> %d: %s", request.method, request.path, status, message)
    return _json(ErrorResponse(error=message), status)


def _authenticate(auth: Auth) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz":
            problem = auth.problem(request.headers, await request.read())
            if problem is not None:
                log.warning("refused %s %s: %s", request.method, request.path, problem)
                raise HttpError(401, problem)
        return await handler(request)

    return middleware


# ---------------------------------------------------------------- helpers


async def _body(request: web.Request, adapter: TypeAdapter[M]) -> M:
    """The JSON body validated as one model; 400 for bad JSON, 422 for a bad model."""
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise HttpError(422, _summary(exc)) from None


def _summary(exc: ValidationError) -> str:
    """All validation errors on one line: `field: message; other: message`."""
    parts = []
    for error in exc.errors():
        # Union members (k8s, addon) come first in the location; drop the tag.
        location = [str(p) for p in error["loc"] if p not in ("k8s", "addon")]
        where = ".".join(location) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "invalid request: " + "; ".join(parts)


def _spec(body: K8sStart | AddonStart, key: str) -> RolloutSpec:
    try:
        parse_selector(body.selector)
    except SelectorError as exc:
        raise HttpError(422, f"bad label selector: {exc}") from None
    try:
        operation: Operation
        if isinstance(body, K8sStart):
            parse_version(body.to)
            operation = K8sTarget(version=body.to)
        else:
            operation = AddonTarget(
                name=body.name,
                namespace=body.namespace,
                workload=body.workload,
                container=body.container,
                image=body.image,
            )
        options = RolloutOptions(
            max_concurrent=body.max_concurrent,
            failure_budget=body.failure_budget,
            wave_failure_budget=body.wave_failure_budget,
            soak_seconds=parse_duration(body.soak),
            approve_between=body.approve_between,
            skip_unreachable=body.skip_unreachable,
            window=body.window,
            health_gates=body.health_gates,
            auto_rollback=isinstance(body, AddonStart) and body.auto_rollback,
            cluster_timeout_seconds=parse_duration(body.cluster_timeout),
        )
    except (CliError, VersionError) as exc:
        raise HttpError(422, f"invalid request: {exc}") from None
    except ValidationError as exc:
        raise HttpError(422, _summary(exc)) from None
    return RolloutSpec(
        id=key, selector=body.selector, waves=[body.waves], operation=operation, options=options
    )


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
        workflow_id=desc.id, run_id=_first_run_id(desc), status=_status(desc), created=created
    )


def _first_run_id(desc: WorkflowExecutionDescription) -> str:
    """The id of the chain's first run: what the start returned, before continue-as-new."""
    return desc.raw_description.workflow_execution_info.first_run_id or desc.run_id


def _status(desc: WorkflowExecutionDescription) -> str:
    return (desc.status or WorkflowExecutionStatus.RUNNING).name


def _ids(desc: WorkflowExecutionDescription) -> str:
    return f"{desc.id} run {desc.run_id} ({_status(desc)})"


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


def _json(model: BaseModel, status: int) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status)
