"""The webhook service: CI pipelines start rollouts, ITSM tools approve their waves.

    POST /v1/rollouts                          start (header Idempotency-Key required)
    POST /v1/git/push                          sync a pushed commit (one sync per SHA)
    GET  /v1/operations/{id}                   a rollout's status, `progress`, result
    POST /v1/operations/{id}/approve           admit the waiting wave it names (ITSM)
    POST /v1/operations/{id}/pause|resume|abort
    POST /v1/dr/{app}/switchover|failover|failback|drill   a DR run (Idempotency-Key)
    GET  /v1/dr/{app}                          an application's DR record
    GET  /v1/dr/operations/{id}                a DR run's status and steps
    GET  /healthz                              liveness, no authentication
    GET  /openapi.json                         the OpenAPI 3.1 schema, no authentication

A start runs as `rollout:<kind>:<Idempotency-Key>`; a repeated delivery finds that
workflow (running or closed) and answers 200 with it instead of starting a second run.
Plans are made and checked (the engine's dry run) before anything starts, so a bad plan is
refused with a 4xx. Every error is a JSON `{"error": "<one line>"}`, never a traceback.

Authentication, reads included: a v1 signature with FLOTILLA_WEBHOOK_SECRET over the
method, path, Idempotency-Key, timestamp, nonce and body (starters/webhook_signing.py),
accepted once within the window; or `Authorization: Bearer <FLOTILLA_WEBHOOK_TOKEN>`.
Neither value is logged or passed to a workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import signal
import time
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
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from fleet import search
from fleet.config import Settings
from fleet.connect import connect
from fleet.dr import DrRequest, OpKind
from fleet.rollout_models import ApproveRequest, ControlRequest, Outcome, RolloutSpec
from fleet.wave_specs import PlanError
from starters import cli_sync, ops, rollouts
from starters.errors import CliError, failure_message, usage
from starters.webhook_models import (
    START_BODY,
    ApproveBody,
    ControlBody,
    ControlResponse,
    DrStartBody,
    ErrorResponse,
    GitPushBody,
    Health,
    OperationResponse,
    StartResponse,
)
from starters.webhook_openapi import CONTROLS, DR_ACTIONS, ROUTES, openapi
from starters.webhook_signing import (
    KEY_HEADER,
    KEY_PATTERN,
    NONCE_HEADER,
    NONCE_RE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    VERSION,
    WINDOW_SECONDS,
    MemoryNonces,
    NoncesFull,
    NonceStore,
    canonical,
    signature,
)
from workflows.dr import RUNS, Switchover
from workflows.registry import OPERATIONS
from workflows.rollout import Rollout

_GIT_PUSH_BODY: TypeAdapter[GitPushBody] = TypeAdapter(GitPushBody)
log = logging.getLogger("flotilla.webhook")

SECRET_ENV = "FLOTILLA_WEBHOOK_SECRET"
TOKEN_ENV = "FLOTILLA_WEBHOOK_TOKEN"
WINDOW_ENV = "FLOTILLA_WEBHOOK_WINDOW"
_KEY_RE = re.compile(KEY_PATTERN)
# The runs this service starts and serves; not cluster entities, children or dry runs.
_ROLLOUT_ID_RE = re.compile(r"^rollout:[a-z][a-z0-9-]{0,30}:" + KEY_PATTERN[1:])
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
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
    request in when neither a secret nor a token is set. A signed request is accepted
    within `window` seconds of its timestamp, once: `nonces` remembers it that long."""

    secret: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    anonymous: bool = False
    window: int = WINDOW_SECONDS
    nonces: NonceStore = field(default_factory=MemoryNonces, compare=False)

    @classmethod
    def from_env(cls, *, anonymous: bool = False) -> Auth:
        window = os.environ.get(WINDOW_ENV, "") or str(WINDOW_SECONDS)
        if not window.isdecimal() or not 1 <= int(window) <= 3600:
            raise usage(f"{WINDOW_ENV} must be a number of seconds from 1 to 3600")
        return cls(
            secret=os.environ.get(SECRET_ENV, ""),
            token=os.environ.get(TOKEN_ENV, ""),
            anonymous=anonymous,
            window=int(window),
        )

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.token)

    async def check(self, method: str, path: str, headers: Any, body: bytes) -> None:
        """Raises HttpError unless the request is authenticated: 401, or 409 for a signed
        request seen before. `path` is the raw path (and query) as sent."""
        if not self.configured:
            if self.anonymous:
                return
            raise HttpError(401, "the webhook has no credentials configured")
        if self.secret and SIGNATURE_HEADER in headers:
            return await self._check_signature(method, path, headers, body)
        bearer = headers.get("Authorization", "")
        if self.token and bearer.startswith("Bearer "):
            if hmac.compare_digest(bearer[len("Bearer ") :].strip().encode(), self.token.encode()):
                return
            raise HttpError(401, "bad bearer token")
        ways = [f"{SIGNATURE_HEADER}, {TIMESTAMP_HEADER} and {NONCE_HEADER}"] * bool(self.secret)
        ways += ["Authorization: Bearer <token>"] * bool(self.token)
        raise HttpError(401, f"missing credentials: send {' or '.join(ways)}")

    async def _check_signature(self, method: str, path: str, headers: Any, body: bytes) -> None:
        sent = headers.get(SIGNATURE_HEADER, "").strip().lower()
        timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
        nonce = headers.get(NONCE_HEADER, "").strip()
        if not sent.startswith(f"{VERSION}="):
            raise HttpError(
                401, f"bad {SIGNATURE_HEADER}: expected {VERSION}=<hex> (docs/webhooks.md)"
            )
        if not _TIMESTAMP_RE.match(timestamp):
            raise HttpError(401, f"missing or bad {TIMESTAMP_HEADER}: expected unix seconds")
        if not NONCE_RE.match(nonce):
            raise HttpError(
                401, f"missing or bad {NONCE_HEADER}: expected 16-128 letters, digits, '_', '-'"
            )
        skew = time.time() - int(timestamp)
        if abs(skew) > self.window:
            raise HttpError(
                401,
                f"expired signature: {TIMESTAMP_HEADER} is {skew:+.0f}s from the server's "
                f"clock, more than the {self.window}s allowed",
            )
        key = headers.get(KEY_HEADER, "")
        expected = signature(self.secret, canonical(method, path, key, timestamp, nonce, body))
        if not hmac.compare_digest(expected.encode(), sent.encode()):
            raise HttpError(
                401,
                f"bad {SIGNATURE_HEADER}: it must sign this method, path, {KEY_HEADER}, "
                "timestamp, nonce and body (docs/webhooks.md)",
            )
        try:
            fresh = await self.nonces.remember(nonce, until=int(timestamp) + self.window)
        except NoncesFull:
            raise HttpError(
                503, "too many signed requests within the window; retry later"
            ) from None
        if not fresh:
            raise HttpError(409, f"replayed request: {NONCE_HEADER} {nonce!r} was used before")


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
    handlers: dict[str, Handler] = {
        "/healthz": api.healthz,
        "/openapi.json": api.openapi,
        "/v1/rollouts": api.start,
        "/v1/git/push": api.git_push,
        "/v1/operations/{workflow_id}": api.operation,
        "/v1/operations/{workflow_id}/approve": api.approve,
        **{f"/v1/operations/{{workflow_id}}/{action}": api.control for action in CONTROLS},
        "/v1/dr/{app}/{action}": api.dr_start,
        "/v1/dr/{app}": api.dr_app,
        "/v1/dr/operations/{workflow_id}": api.dr_operation,
    }
    public = {route.path for route in ROUTES if not route.signed}
    app = web.Application(middlewares=[_errors, _authenticate(auth, public)])
    app.add_routes(
        [web.route(r.method, r.path, handlers[r.path]) for r in ROUTES]
        + [web.post("/v1/operations/{workflow_id}/{action}", api.unknown_action)]
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
        self._openapi = json.dumps(openapi())

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(Health(), 200)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(text=self._openapi)

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
        try:
            await rollouts.check_plan(client, plan, task_queue=self._task_queue)
        except rollouts.PlanRefused as exc:
            raise HttpError(422, exc.message) from None
        except rollouts.NoWorker as exc:
            raise HttpError(503, exc.message) from None
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
            status=Outcome.RUNNING.value,
            temporal_status=WorkflowExecutionStatus.RUNNING.name,
            created=True,
            clusters=plan.cluster_names(),
        )
        return _json(response, 201)

    async def git_push(self, request: web.Request) -> web.Response:
        """One sync per pushed SHA (`rollout:sync:<sha12>`), however often it is delivered."""
        body = await _body(request, _GIT_PUSH_BODY)
        try:
            cli_sync.check_push_repo(body.repo)
        except cli_sync.RepoNotAllowed as exc:
            raise HttpError(403, exc.message) from None
        client = await self._temporal.client()
        who = f"push by {body.pusher}" if body.pusher else "git push"
        try:
            workflow_id, created = await cli_sync.start_for_sha(
                client, body.repo, body.after, started_by=who, task_queue=self._task_queue
            )
        except rollouts.NoWorker as exc:
            raise HttpError(503, exc.message) from None
        except CliError as exc:  # a bad commit, an unknown kind
            raise HttpError(422, exc.message) from None
        desc = await _describe(client, workflow_id)
        if desc is None:
            raise HttpError(409, f"{workflow_id} was not found after starting")
        log.info("push %s of %s: %s (created %s)", body.after[:12], body.repo, workflow_id, created)
        return _json(_started(desc, created=created), 201 if created else 200)

    async def operation(self, request: web.Request) -> web.Response:
        workflow_id = _rollout_id(request.match_info["workflow_id"])
        client = await self._temporal.client()
        desc = await _rollout(client, workflow_id)
        handle = client.get_workflow_handle(desc.id, run_id=desc.run_id)
        progress: Any = None
        with contextlib.suppress(Exception):  # no such query or no worker: status only
            found = await asyncio.wait_for(handle.query(Rollout.progress), QUERY_TIMEOUT)
            progress = found.model_dump(mode="json")
        result: Any = None
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            with contextlib.suppress(Exception):
                result = await asyncio.wait_for(handle.result(follow_runs=False), QUERY_TIMEOUT)
        response = OperationResponse(
            workflow_id=desc.id,
            run_id=desc.run_id,
            first_run_id=_first_run_id(desc),
            type=desc.workflow_type,
            status=_outcome(desc),
            temporal_status=_status(desc),
            progress=progress,
            result=result,
        )
        return _json(response, 200)

    async def approve(self, request: web.Request) -> web.Response:
        body = await _body(request, TypeAdapter(ApproveBody))
        note = _note(body.change_id, body.comment)
        approval = ApproveRequest(who=body.approver, wave=body.wave, note=note)
        return await self._control(request, "approve", approval)

    async def control(self, request: web.Request) -> web.Response:
        """Pause, resume or abort: the action is the route's last path segment."""
        body = await _body(request, TypeAdapter(ControlBody))
        control = ControlRequest(who=body.who, reason=_note(body.change_id, body.reason))
        return await self._control(request, request.path.rsplit("/", 1)[1], control)

    async def dr_start(self, request: web.Request) -> web.Response:
        """Starts a DR run after the checks the CLI makes (unknown app 404, a cluster
        outside the policy 422, an operation running 409)."""
        from activities.dr_observe import start_run
        from starters.cli_dr import check_request

        app, action = request.match_info["app"], request.match_info["action"]
        if action not in DR_ACTIONS:
            raise HttpError(404, f"unknown DR action {action[:40]!r}: {', '.join(DR_ACTIONS)}")
        key = request.headers.get(KEY_HEADER, "").strip()
        if not key or not _KEY_RE.match(key):
            raise HttpError(400, f"missing or bad {KEY_HEADER} header (e.g. the change id)")
        body = await _body(request, TypeAdapter(DrStartBody))
        kind = OpKind(action)
        workflow_id = f"{kind}:{app}:{key}"
        client = await self._temporal.client()
        existing = await _describe(client, workflow_id)
        if existing is not None:
            return _json(_started(existing, created=False), 200)
        try:
            await check_request(client, kind, app, body.target)
        except CliError as exc:
            status = 404 if "unknown application" in exc.message else 409
            raise HttpError(422 if exc.code == 2 else status, exc.message) from None
        reason = _note(body.change_id, body.reason)
        req = DrRequest(app=app, target=body.target, who=body.who, reason=reason, force=body.force)
        queue = self._task_queue or Settings.from_env().task_queue
        await start_run(client, kind, req, workflow_id=workflow_id, task_queue=queue)
        log.info("started %s by %s (key %s)", workflow_id, body.who, key)
        desc = await _describe(client, workflow_id)
        assert desc is not None
        return _json(_started(desc, created=True), 201)

    async def dr_app(self, request: web.Request) -> web.Response:
        from activities.dr_records import get_app

        app = request.match_info["app"]
        state = await get_app(await self._temporal.client(), app)
        if state is None:
            raise HttpError(404, f"no DR policy for application {app[:100]!r}")
        return _json(state, 200)

    async def dr_operation(self, request: web.Request) -> web.Response:
        workflow_id = request.match_info["workflow_id"]
        client = await self._temporal.client()
        desc = await _describe(client, workflow_id)
        if desc is None or desc.workflow_type not in {run.__name__ for run in RUNS.values()}:
            raise HttpError(404, f"no DR run with workflow id {workflow_id[:120]!r}")
        handle = client.get_workflow_handle(desc.id, run_id=desc.run_id)
        progress: Any = None
        with contextlib.suppress(Exception):  # no worker: status only
            found = await asyncio.wait_for(handle.query(Switchover.progress), QUERY_TIMEOUT)
            progress = found.model_dump(mode="json")
        response = OperationResponse(
            workflow_id=desc.id,
            run_id=desc.run_id,
            first_run_id=_first_run_id(desc),
            type=desc.workflow_type,
            status=_outcome(desc),
            temporal_status=_status(desc),
            progress=progress,
        )
        return _json(response, 200)

    async def unknown_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        raise HttpError(404, f"unknown action {action[:40]!r}: approve, pause, resume or abort")

    async def _control(
        self, request: web.Request, action: str, control: ApproveRequest | ControlRequest
    ) -> web.Response:
        workflow_id = _rollout_id(request.match_info["workflow_id"])
        client = await self._temporal.client()
        desc = await _rollout(client, workflow_id)
        if desc.status != WorkflowExecutionStatus.RUNNING:
            raise HttpError(409, f"{desc.id} is {_status(desc).lower()}; no controls apply")
        try:
            event = await rollouts.control(client, desc.id, action, control)
        except WorkflowUpdateFailedError as exc:
            raise HttpError(409, failure_message(exc)) from None
        log.info("%s %s by %s: %s", action, _ids(desc), event.who, event.reason)
        response = ControlResponse(workflow_id=desc.id, **event.model_dump())
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


def _authenticate(auth: Auth, public: set[str]) -> Middleware:
    """Every route but the `public` paths needs credentials, reads included."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in public:
            body = await request.read()
            await auth.check(request.method, request.raw_path, request.headers, body)
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
        # Union members (the operation kinds) come first in the location; drop the tag.
        kinds = {operation.kind for operation in OPERATIONS}
        location = [str(p) for p in error["loc"] if p not in kinds]
        where = ".".join(location) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "invalid request: " + "; ".join(parts)


def _spec(body: Any, key: str) -> RolloutSpec:
    """The spec of a start body (StartRequest); 422 naming every problem."""
    try:
        return RolloutSpec(
            id=key,
            selector=body.selector,
            waves=body.waves,
            operation=body.operation,
            options=body.options,
        )
    except ValidationError as exc:
        raise HttpError(422, _summary(exc)) from None


def _rollout_id(text: str) -> str:
    """The workflow id of `rollout:<kind>:<key>` or `<kind>:<key>`; 404 for any other id
    (cluster entities, child runs, dry runs: the webhook serves the rollouts it starts)."""
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
