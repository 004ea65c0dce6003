"""The /api/v1/sessions routes; every one reaches the manager on app.state, the one /health reads."""

from __future__ import annotations

import hmac
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from faultmaven.auth import InvalidToken, TokenVerifier
from faultmaven.config.config import Settings
from faultmaven.exceptions import SessionStoreException
from faultmaven.observability.audit import audit_admin
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.session import MAX_USER_ID_LENGTH, Session, check_user_id
from faultmaven.session_management import MAX_PAGE, SessionManager
from faultmaven.web.conditional import etag, if_match_version
from faultmaven.web.errors import (
    ADMIN_ERRORS,
    CREATE_ERRORS,
    METRICS_ERRORS,
    PER_SESSION_ERRORS,
    ROUTE_ERRORS,
    UPDATE_ERRORS,
    AdminTokenRequired,
    BadRequest,
    Invalid,
    NoIdentity,
    NotFound,
    RefusingRoute,
    StoreUnavailableBecause,
    TooManyFailures,
    UnsupportedMediaType,
    checked,
    found,
    problem_for,
    under,
)
from faultmaven.web.guard import FailureGuard

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"], route_class=RefusingRoute)
_bearer = HTTPBearer(auto_error=False)
ADMIN_OFF = "admin routes are off: set SESSION_ADMIN_TOKEN (or an identity source for a user's own sessions)"


class CreateSession(BaseModel):
    """Every field optional; the FaultMaven copilot sends client_id, session_type, timeout_minutes, metadata."""

    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_USER_ID_LENGTH)
    data: dict[str, Any] | None = None
    client_id: str | None = Field(default=None, min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    session_type: str = Field(default="troubleshooting", min_length=1, max_length=64)
    timeout_minutes: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    metadata: dict[str, Any] | None = None


class UpdateSession(BaseModel):
    """The new data, or with Content-Type application/merge-patch+json an RFC 7396 merge patch of it."""

    model_config = ConfigDict(extra="forbid")
    data: dict[str, Any]


MERGE_PATCH = "application/merge-patch+json"
_PATCH_TYPES = {"application/json": False, MERGE_PATCH: True}  # media type -> is a merge patch


def _mounted(request: Request) -> str:
    """Where these routes are served (faultmaven.embed.install's mount_path + prefix), for Location."""
    return getattr(request.app.state, "session_routes_prefix", router.prefix)


CALLER = "faultmaven_caller"  # where AuthenticateFirst keeps the caller in the request's state
_BODILESS = frozenset(("GET", "HEAD", "OPTIONS"))  # requests whose body no route reads


def manager_of(request: Request) -> SessionManager:
    manager: SessionManager = request.app.state.session_manager
    return manager


def caller_of(request: Request) -> str | None:
    """The caller, as AuthenticateFirst found it before the body was read (else found now)."""
    state = request.scope.get("state")
    if state is not None and CALLER in state:
        return state[CALLER]  # type: ignore[no-any-return]
    return identify(request)


def identify(request: Request) -> str | None:
    """The caller's user: the one the trusted gateway header names (SESSION_USER_HEADER) or the bearer
    JWT names (SESSION_JWT_SECRET / SESSION_JWT_PUBLIC_KEY); None when neither is configured.

    With an identity source configured a request without a valid identity is refused (NoIdentity,
    InvalidToken): it did not come through the gateway, or its token does not hold.
    """
    settings: Settings = request.app.state.session_manager.settings
    header = settings.user_header
    if header is None:
        if settings.jwt_secret is None and settings.jwt_public_key is None:
            return None
        return _token_user(request, settings)
    values = request.headers.getlist(header)
    if len(values) > 1:  # a gateway that appends instead of replacing would let the client pick its user
        raise BadRequest(f"{header} header given more than once")
    value = values[0] if values else None
    if value is None:
        raise NoIdentity(f"missing {header} header")
    try:
        return check_user_id(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _token_user(request: Request, settings: Settings) -> str:
    """The bearer token's user, checked by the app's one TokenVerifier (keys parsed once, not per request)."""
    state = request.app.state
    verifier: TokenVerifier | None = getattr(state, "token_verifier", None)
    if verifier is None or getattr(state, "token_verifier_settings", None) is not settings:
        verifier = state.token_verifier = TokenVerifier(settings.token_policy())  # or KeyFileError
        state.token_verifier_settings = settings
    guard, source = _guarded(request)
    try:
        user = verifier.user_of(request.headers.get("authorization"))
    except InvalidToken:
        guard.failed(source, "bearer token")
        raise
    guard.succeeded(source)
    return user


class AuthenticateFirst:
    """Checks the caller of every session route (gateway header, bearer token) before anything reads the
    request's body: an unauthenticated request is refused (the table's answer to what `identify` raised)
    with its body never read nor parsed, whatever its size. CORS preflights pass (they carry no
    identity), and so do the operator routes, which take no body and check the admin token themselves
    (`/cleanup`, `/metrics`). The caller found is kept for the route in the request's state."""

    def __init__(self, app: ASGIApp, path_prefix: str) -> None:
        self.app, self.path_prefix = app, path_prefix
        self.operator_paths = {f"{path_prefix}/cleanup", f"{path_prefix}/metrics"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS or not self._checks(scope):
            await self.app(scope, receive, send)  # the route finds the caller itself: no body to guard
            return
        try:
            caller = identify(Request(scope))
        except ROUTE_ERRORS as exc:
            await problem_for(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER] = caller
        await self.app(scope, receive, send)

    def _checks(self, scope: Scope) -> bool:
        """Whether this request is one to check here: a session route's, with an identity source set."""
        path = scope["path"]
        if not under(path, self.path_prefix) or path in self.operator_paths:
            return False
        manager = getattr(scope["app"].state, "session_manager", None)
        return manager is not None and manager.settings.identity_source is not None


# The per-session routes (what a client calls on every step) read the manager and the caller with the two
# plain calls above. As FastAPI dependencies they cost a third of a GET's time (cProfile), and as plain
# `def` dependencies FastAPI ran each in a worker thread. The rare routes keep them as dependencies.
async def get_manager(request: Request) -> SessionManager:
    return manager_of(request)


Manager = Annotated[SessionManager, Depends(get_manager)]


async def get_caller(request: Request) -> str | None:
    return caller_of(request)


Caller = Annotated[str | None, Depends(get_caller)]


def _json(content: dict[str, Any], code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None) -> Response:
    """One encoding per response: the session's plain JSON types go straight to json.dumps (Starlette's
    JSONResponse), not through FastAPI's jsonable_encoder walk and response-model check first."""
    return JSONResponse(content, code, headers)


def session_json(session: Session, code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None) -> Response:
    """A per-session answer: the session JSON with its data version as the ETag."""
    return _json(session.to_dict(), code, {"ETag": etag(session.version)} | (headers or {}))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=dict[str, Any],
    responses={**CREATE_ERRORS, 200: {"description": "a live session resumed"}},
)
async def create_session(request: Request, body: Annotated[CreateSession | None, Body()] = None) -> Response:
    """201 with a new session; 200 with `session_resumed: true` when the client_id resumed a live one."""
    manager, caller = manager_of(request), caller_of(request)
    body = body or CreateSession()
    if caller is not None and body.user_id is not None and body.user_id != caller:
        raise Invalid("user_id differs from the caller's")
    session = await checked(
        manager.create_session(
            caller if caller is not None else body.user_id,
            body.data,
            client_id=body.client_id,
            timeout_minutes=body.timeout_minutes,
            session_type=body.session_type,
            metadata=body.metadata,
        )
    )
    code = status.HTTP_200_OK if session.session_resumed else status.HTTP_201_CREATED
    return session_json(session, code, {"Location": f"{_mounted(request)}/{session.session_id}"})


@router.get("/metrics", responses=METRICS_ERRORS)
async def session_metrics(manager: Manager, request: Request) -> dict[str, Any]:
    """The manager's metrics plus the event loop's longest stalls, as the load harness reads them."""
    monitor: LoopMonitor = request.app.state.loop_monitor
    try:
        return manager.get_session_metrics() | monitor.snapshot()
    except SessionStoreException as exc:  # an operator's view: it says what the store reported
        raise StoreUnavailableBecause(exc) from None


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _require_admin(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    """NotFound unless SESSION_ADMIN_TOKEN is set, then AdminTokenRequired without that bearer token
    (constant-time compare), TooManyFailures while the source is backing off after failures (web/guard.py).

    The NotFound says why, so that an operator does not take the route for a wrong URL."""
    secret = manager_of(request).settings.admin_token
    if secret is None:
        raise NotFound(ADMIN_OFF)
    guard, source = _guarded(request)
    token = secret.get_secret_value().encode()
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token):
        guard.failed(source, "admin token")
        raise AdminTokenRequired()
    guard.succeeded(source)


def _guarded(request: Request) -> tuple[FailureGuard, str]:
    """The app's failure guard and the request's source; TooManyFailures while that source is backing off."""
    guard: FailureGuard = request.app.state.failure_guard
    source = request.client.host if request.client is not None else "unknown"
    wait = guard.wait_s(source)
    if wait > 0:
        raise TooManyFailures(wait)
    return guard, source


def _target_user(
    request: Request, caller: str | None, credentials: HTTPAuthorizationCredentials | None, user_id: str | None
) -> str:
    """Whose sessions a list or revoke acts on: the caller's own with an identity source (gateway header or
    JWT; naming another user is NotFound); without one, the named user, with the admin token."""
    if caller is not None:
        if user_id is not None and user_id != caller:
            raise NotFound("Not Found")
        return caller
    _require_admin(request, credentials)
    if user_id is None:
        raise Invalid("user_id is required")
    try:
        return check_user_id(user_id)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


UserQuery = Annotated[str | None, Query(min_length=1, max_length=MAX_USER_ID_LENGTH)]


@router.get("", responses=ADMIN_ERRORS)
async def list_sessions(
    request: Request,
    manager: Manager,
    caller: Caller,
    credentials: Credentials,
    user_id: UserQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The user's live sessions, most recently active first (ASVS 7.5.2)."""
    user = _target_user(request, caller, credentials, user_id)
    sessions, total = await manager.user_session_page(user, limit=limit, offset=offset)
    return {"sessions": [s.to_dict() for s in sessions], "total": total, "limit": limit, "offset": offset}


@router.delete("", responses=ADMIN_ERRORS)
async def revoke_sessions(
    request: Request, manager: Manager, caller: Caller, credentials: Credentials, user_id: UserQuery = None
) -> dict[str, Any]:
    """End every session of the user (ASVS 7.4.2, 7.4.5)."""
    return {"revoked": await manager.revoke_user_sessions(_target_user(request, caller, credentials, user_id))}


@router.post("/cleanup", responses=ADMIN_ERRORS)
async def trigger_cleanup(
    request: Request,
    manager: Manager,
    credentials: Credentials,
    max_age_minutes: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
) -> dict[str, Any]:
    _require_admin(request, credentials)
    started = time.perf_counter()
    cleaned = await manager.run_cleanup(max_age_minutes, trigger="admin")
    audit_admin("cleanup", _guarded(request)[1], cleaned, time.time())
    return {"cleaned": cleaned, "duration_ms": round((time.perf_counter() - started) * 1000.0, 3)}


@router.get("/{session_id}", response_model=dict[str, Any], responses=PER_SESSION_ERRORS)
async def get_session(session_id: str, request: Request) -> Response:
    manager, caller = manager_of(request), caller_of(request)
    return session_json(found(await manager.get_session(session_id, user_id=caller)))


@router.post("/{session_id}/heartbeat", response_model=dict[str, Any], responses=PER_SESSION_ERRORS)
async def heartbeat(session_id: str, request: Request) -> Response:
    manager, caller = manager_of(request), caller_of(request)
    session = found(await manager.touch_session(session_id, user_id=caller))
    return _json(
        {
            "ok": True,  # the copilot reads only this
            "session_id": session.session_id,
            "expires_at": session.expires_at.isoformat(),
            "last_activity": session.last_activity.isoformat(),
            "status": session.status,
            "version": session.version,
        },
        headers={"ETag": etag(session.version)},
    )


@router.post("/{session_id}/rotate", response_model=dict[str, Any], responses=PER_SESSION_ERRORS)
async def rotate_session(session_id: str, request: Request) -> Response:
    """A new id for the session, everything else kept (ASVS 7.2.4); the old id is a 404 from now on."""
    manager, caller = manager_of(request), caller_of(request)
    session = await manager.rotate_session(session_id, user_id=caller)
    return session_json(session, headers={"Location": f"{_mounted(request)}/{session.session_id}"})


def _patch_kind(request: Request) -> bool:
    """Whether the PATCH body is a merge patch (True) or the new data (False); UnsupportedMediaType else."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return False  # as FastAPI reads a body without a type: JSON
    kind = _PATCH_TYPES.get(content_type.partition(";")[0].strip().lower())
    if kind is None:
        raise UnsupportedMediaType(tuple(_PATCH_TYPES))
    return kind


async def _patch_body(request: Request) -> UpdateSession:
    """The body parsed and validated as FastAPI does for a model parameter (a validation error, or BadRequest
    for a body that is no JSON text), read here because FastAPI would take any JSON type (e.g.
    application/json-patch+json) as this body."""
    raw = await request.body()
    try:
        parsed = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([error | {"ctx": {"error": exc.msg}}]) from None
    except (ValueError, RecursionError):  # not UTF-8, or nested past the parser's reach
        raise BadRequest("There was an error parsing the body") from None
    try:
        return UpdateSession.model_validate(parsed)
    except ValidationError as exc:
        raise RequestValidationError(
            [error | {"loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


_PATCH_BODY = {"schema": UpdateSession.model_json_schema()}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'the ETag of the version this write expects, e.g. "3" (a mismatch is a 412)',
    "schema": {"type": "string"},
}


@router.patch(
    "/{session_id}",
    response_model=dict[str, Any],
    responses=UPDATE_ERRORS,
    openapi_extra={
        "requestBody": {"required": True, "content": dict.fromkeys(_PATCH_TYPES, _PATCH_BODY)},
        "parameters": [_IF_MATCH],
    },
)
async def update_session(session_id: str, request: Request) -> Response:
    """Replace the data (application/json) or apply an RFC 7396 merge patch to it (application/merge-patch+json);
    with If-Match, only if it names the current version (else 412 with that version, nothing changed)."""
    merge = _patch_kind(request)
    body = await _patch_body(request)
    if_version = if_match_version(request.headers.getlist("if-match"))  # or BadIfMatch
    manager, caller = manager_of(request), caller_of(request)
    session = await checked(
        manager.update_session(session_id, body.data, user_id=caller, merge=merge, if_version=if_version)
    )
    return session_json(session)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PER_SESSION_ERRORS)
async def delete_session(session_id: str, request: Request) -> Response:
    manager, caller = manager_of(request), caller_of(request)
    found(await manager.delete_session(session_id, user_id=caller) or None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
