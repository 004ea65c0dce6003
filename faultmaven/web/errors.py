"""The service's errors as HTTP answers, in one place: every status the service decides, and its shape.

`ANSWERS` is the one table: exception class -> status, detail, headers (WWW-Authenticate, Retry-After,
ETag, Accept-Patch) and extra members. The routes raise a class of the table (faultmaven's own exceptions,
the token and key-file errors, a bad If-Match, or a small `Refused` class of this module) and never decide
a status themselves; request validation errors are the 422 below. Every error of the session routes is an
RFC 9457 problem details object (`application/problem+json`: type, title, status, detail, where `detail` is
the one sentence a client reads; a 422's field errors under `errors`). Only faultmaven's own exception
classes get a handler, and HTTP errors and validation errors are rendered so only under the session routes
(everywhere in the service's own app), so a host app that embeds the sessions keeps its own answers to
everything else. The manager's argument checks raise plain TypeError / ValueError; the routes turn those
into a 422 where they call the manager (`checked`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from http import HTTPStatus
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from faultmaven.auth import InvalidToken, KeyFileError
from faultmaven.exceptions import (
    FaultMavenError,
    SessionCleanupException,
    SessionDataTooLargeError,
    SessionNotFoundError,
    SessionStoreException,
    SessionStoreFullError,
    SessionVersionConflict,
)
from faultmaven.web.conditional import BadIfMatch, etag

NOT_FOUND = "session not found"
STORE_UNAVAILABLE = "session store unavailable"
VERSION_CONFLICT = "If-Match does not name the current version of the session's data"
PROBLEM_JSON = "application/problem+json"
UNANSWERED = HTTPStatus.INTERNAL_SERVER_ERROR.value  # what the server answers when the app raised before answering
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}  # RFC 9110's names (http has the old ones)
_T = TypeVar("_T")


class Refused(FaultMavenError):
    """A request the session routes refuse, raised where they find it: the class says why, the table below
    says the status and headers, and `detail` is the sentence the client reads."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(Refused):
    """A malformed request: an identity header given twice, a body that is no JSON text, a bad length."""


class NoIdentity(Refused):
    """No identity where an identity source is configured: the gateway's header is missing."""


class AdminTokenRequired(Refused):
    """An operator's route called without the admin token."""

    def __init__(self) -> None:
        super().__init__("admin token required")


class NotFound(Refused):
    """Nothing here for this caller: the admin routes are off, or another user's sessions were named."""


class BodyTooLarge(Refused):
    """A declared body longer than any valid one."""


class UnsupportedMediaType(Refused):
    """A body in a media type the route does not read; `accepted` are those it does."""

    def __init__(self, accepted: Sequence[str]) -> None:
        super().__init__(f"use {' or '.join(accepted)}")
        self.accepted = tuple(accepted)


class Invalid(Refused):
    """A request the service's own rules refuse (a bad user id, timeout, client id...): `detail` says why."""


class TooManyFailures(Refused):
    """Credentials refused while their source backs off after failures (web/guard.py) for `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__("too many failed credentials")
        self.wait_s = wait_s


class StoreUnavailableBecause(Refused):
    """The store failed an operator's route, whose answer says what the store reported (client routes do not)."""

    def __init__(self, exc: SessionStoreException) -> None:
        super().__init__(f"{STORE_UNAVAILABLE}: {exc}")


@dataclass(frozen=True, slots=True)
class Answer:
    """How one class of error is answered. `detail`: the sentence, None for the exception's own message;
    `headers` and `members` (extra problem members) are made from the exception. `reach`: "routes", raised
    by the session routes and turned into an HTTPException where raised (RefusingRoute, AuthenticateFirst);
    "http" or "problem", a handler on the app (so the host's own routes too) that answers as the app
    answers an HTTPException (a host's handlers may format it), or always as problem details."""

    status: int
    _: KW_ONLY
    detail: str | None = None
    headers: Callable[[Any], dict[str, str]] | None = None
    members: Callable[[Any], dict[str, Any]] | None = None
    reach: Literal["routes", "http", "problem"] = "routes"


def _challenge(exc: InvalidToken) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.detail}"'}


def _version(exc: SessionVersionConflict) -> dict[str, Any]:
    return {"version": exc.current_version}


# The one table of the HTTP boundary: every error status the session routes answer, by exception class (the
# most specific class wins). Request validation (422 with `errors`) is answered by `_invalid` below.
ANSWERS: dict[type[Exception], Answer] = {
    BadRequest: Answer(400),
    BadIfMatch: Answer(400),
    NoIdentity: Answer(401),
    InvalidToken: Answer(401, headers=_challenge),
    AdminTokenRequired: Answer(401, headers=lambda _: {"WWW-Authenticate": "Bearer"}),
    NotFound: Answer(404),
    BodyTooLarge: Answer(413),
    UnsupportedMediaType: Answer(415, headers=lambda exc: {"Accept-Patch": ", ".join(exc.accepted)}),
    Invalid: Answer(422),
    TooManyFailures: Answer(429, headers=lambda exc: {"Retry-After": str(math.ceil(exc.wait_s))}),
    KeyFileError: Answer(503, detail="token keys unavailable"),
    StoreUnavailableBecause: Answer(503),
    SessionNotFoundError: Answer(404, detail=NOT_FOUND, reach="http"),
    SessionVersionConflict: Answer(
        412,
        detail=VERSION_CONFLICT,  # the current version (ETag and body), so the client can re-read and retry
        headers=lambda exc: {"ETag": etag(exc.current_version)},
        members=_version,
        reach="problem",
    ),
    SessionDataTooLargeError: Answer(413, reach="http"),
    SessionStoreException: Answer(503, detail=STORE_UNAVAILABLE, reach="problem"),
    SessionStoreFullError: Answer(  # new sessions refused at the store's budget: try again after Retry-After
        503,
        detail="session store full, retry later",
        headers=lambda exc: {"Retry-After": str(exc.retry_after_s)},
        reach="problem",
    ),
    SessionCleanupException: Answer(503, reach="http"),  # an admin's cleanup run: says why (run id, what failed)
}
ROUTE_ERRORS = tuple(cls for cls, answer in ANSWERS.items() if answer.reach == "routes")

# What each status means, for the OpenAPI schema of the routes (docs/http-api.md says the same).
_WHY = {
    400: "a repeated identity header, or a malformed body or Content-Length",
    401: "no valid identity (gateway header or bearer token), or no admin token",
    404: "no live session of the caller's with this id (or the admin routes are off)",
    412: "If-Match names another version of the data (ETag: the current one)",
    413: "the body or the session's data is too large",
    415: "a media type other than application/json or application/merge-patch+json",
    422: "a field outside its rule; `errors` lists each",
    429: "too many failed credentials from this source (Retry-After)",
    503: "the session store is unavailable or full (Retry-After when full)",
}
_PROBLEM = {PROBLEM_JSON: {"schema": {"type": "object"}}}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route answers, for the OpenAPI schema: each an RFC 9457 problem."""
    return {code: {"description": _WHY[code], "content": _PROBLEM} for code in codes}


# The error statuses each kind of route declares.
PER_SESSION_ERRORS = documented(400, 401, 404, 429, 503)
ADMIN_ERRORS = documented(401, 404, 422, 429, 503)
CREATE_ERRORS = documented(400, 401, 413, 422, 429, 503)
UPDATE_ERRORS = documented(400, 401, 404, 412, 413, 415, 422, 429, 503)
METRICS_ERRORS = documented(503)


def answer_of(exc: Exception) -> Answer:
    """The table's row for `exc`: that of its most specific class in the table."""
    return next(ANSWERS[cls] for cls in type(exc).__mro__ if cls in ANSWERS)


def http_exception_of(exc: Exception) -> HTTPException:
    """`exc` as the HTTPException the table makes of it (problem members aside)."""
    answer = answer_of(exc)
    detail = str(exc) if answer.detail is None else answer.detail
    return HTTPException(answer.status, detail=detail, headers=answer.headers(exc) if answer.headers else None)


def problem_for(exc: Exception) -> JSONResponse:
    """`exc` answered as problem details, by the table."""
    answer, error = answer_of(exc), http_exception_of(exc)
    members = answer.members(exc) if answer.members else {}
    return problem(error.status_code, error.detail, error.headers, **members)


def problem(status_code: int, detail: str, headers: Mapping[str, str] | None = None, **members: Any) -> JSONResponse:
    """An RFC 9457 problem details answer: `detail` is the one sentence a client reads."""
    title = _TITLES.get(status_code) or HTTPStatus(status_code).phrase
    body = {"type": "about:blank", "title": title, "status": status_code, "detail": detail, **members}
    return JSONResponse(body, status_code, dict(headers or {}), media_type=PROBLEM_JSON)


class RefusingRoute(APIRoute):
    """A session route: the table's "routes" errors it raises (or its dependencies do) leave it as the
    HTTPException the table makes of them, answered by the app as every HTTPException is."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def refusing(request: Request) -> Response:
            try:
                return await handler(request)
            except ROUTE_ERRORS as exc:
                raise http_exception_of(exc) from None

        return refusing


def under(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it ("" is above every path)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _ours(request: Request) -> bool:
    prefix = getattr(request.app.state, "problem_prefix", None)  # "": every path (the service's own app)
    return prefix is not None and under(request.url.path, prefix)


def found(value: _T | None) -> _T:
    """What the manager found; its None (no live session of the caller's with this id) is the 404."""
    if value is None:
        raise SessionNotFoundError(NOT_FOUND)
    return value


async def checked(call: Awaitable[_T]) -> _T:
    """The manager's answer to a create or update; its argument checks (TypeError, ValueError) are Invalid.

    SessionDataTooLargeError is a ValueError too, and passes on to its own handler (413)."""
    try:
        return await call
    except SessionDataTooLargeError:
        raise
    except (TypeError, ValueError) as exc:
        raise Invalid(str(exc)) from None


def install_error_handlers(app: FastAPI, prefix: str) -> None:
    """Map faultmaven's exceptions to their HTTP answers on `app` (the table's "http" and "problem" rows), and
    answer HTTP and validation errors under `prefix` as problem details (elsewhere as before)."""
    for exc_class, answer in ANSWERS.items():
        if answer.reach != "routes":
            app.add_exception_handler(exc_class, _as_problem if answer.reach == "problem" else _as_http_error)
    app.state.problem_prefix = prefix
    host_http = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    host_invalid = app.exception_handlers.get(RequestValidationError, request_validation_exception_handler)

    async def http_error(request: Request, exc: Exception) -> Response:
        if not _ours(request) or not isinstance(exc, StarletteHTTPException):
            return await settled(host_http(request, exc))
        return problem(exc.status_code, str(exc.detail), exc.headers)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        if not _ours(request) or not isinstance(exc, RequestValidationError):
            return await settled(host_invalid(request, exc))
        return _invalid(exc)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


async def settled(answer: Response | Awaitable[Response]) -> Response:
    """A handler's answer, whether the handler was a coroutine function or a plain one."""
    return await answer if inspect.isawaitable(answer) else answer


def _invalid(exc: RequestValidationError) -> Response:
    """422 with each field error's place, message and type, never the input: it may be a value JSON
    cannot carry (NaN, Infinity) or one the caller should not see echoed."""
    errors = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
    where = f": {'.'.join(map(str, errors[0]['loc']))}: {errors[0]['msg']}" if errors else ""
    return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, f"the request is invalid{where}", errors=errors)


async def _as_http(request: Request, exc: HTTPException) -> Response:
    """Answer as the app answers an HTTPException: its handler for the status code or the class, if any."""
    handlers = request.app.exception_handlers
    by_class = (handlers[c] for c in type(exc).__mro__ if c in handlers)
    handler = handlers.get(exc.status_code) or next(by_class, http_exception_handler)
    answer: Response = await handler(request, exc)
    return answer


async def _as_http_error(request: Request, exc: Exception) -> Response:
    return await _as_http(request, http_exception_of(exc))


async def _as_problem(request: Request, exc: Exception) -> Response:
    return problem_for(exc)


def handler_for(handlers: Mapping[Any, Callable[..., Any]], exc: Exception) -> Callable[..., Any] | None:
    """The handler Starlette's exception middleware picks: by status for an HTTPException, then by the
    most specific class. A handler of Exception (or 500) belongs to the server-error layer outside it: an
    error only it would take is raised on, to reach that layer as from the route."""
    if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers and exc.status_code != 500:
        return handlers[exc.status_code]
    return next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers and cls is not Exception), None)
