"""The service's errors as HTTP answers, in one place: every status the service decides, and its shape.

Every error of the session routes is an RFC 9457 problem details object (`application/problem+json`:
type, title, status, detail, where `detail` is the one sentence a client reads; a 422's field errors
under `errors`). Only faultmaven's own exception classes get a handler, and HTTP errors and validation
errors are rendered so only under the session routes (everywhere in the service's own app), so a host app
that embeds the sessions keeps its own answers to everything else. The manager's argument checks raise
plain TypeError / ValueError; the routes turn those into a 422 where they call the manager (`checked`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from faultmaven.exceptions import (
    SessionCleanupException,
    SessionDataTooLargeError,
    SessionNotFoundError,
    SessionStoreException,
    SessionStoreFullError,
    SessionVersionConflict,
)
from faultmaven.web.conditional import etag

NOT_FOUND = "session not found"
STORE_UNAVAILABLE = "session store unavailable"
VERSION_CONFLICT = "If-Match does not name the current version of the session's data"
PROBLEM_JSON = "application/problem+json"
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}  # RFC 9110's names (http has the old ones)
_T = TypeVar("_T")
Handler = Callable[[Request, Exception], Awaitable[Response]]


def problem(status_code: int, detail: str, headers: Mapping[str, str] | None = None, **members: Any) -> JSONResponse:
    """An RFC 9457 problem details answer: `detail` is the one sentence a client reads."""
    title = _TITLES.get(status_code) or HTTPStatus(status_code).phrase
    body = {"type": "about:blank", "title": title, "status": status_code, "detail": detail, **members}
    return JSONResponse(body, status_code, dict(headers or {}), media_type=PROBLEM_JSON)


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


def invalid(exc: Exception) -> HTTPException:
    """A request the service's own rules refuse (a bad user id, timeout, client id...): 422 saying why."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


async def checked(call: Awaitable[_T]) -> _T:
    """The manager's answer to a create or update; its argument checks (TypeError, ValueError) are a 422.

    SessionDataTooLargeError is a ValueError too, and passes on to its own handler (413)."""
    try:
        return await call
    except SessionDataTooLargeError:
        raise
    except (TypeError, ValueError) as exc:
        raise invalid(exc) from None


def store_unavailable_because(exc: SessionStoreException) -> HTTPException:
    """The 503 of an operator's route, which says what the store reported (client routes do not)."""
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"{STORE_UNAVAILABLE}: {exc}")


def install_error_handlers(app: FastAPI, prefix: str) -> None:
    """Map faultmaven's exceptions to their HTTP answers on `app` (the most specific class wins), and
    answer HTTP and validation errors under `prefix` as problem details (elsewhere as before)."""
    handlers: dict[type[Exception], Handler] = {
        SessionNotFoundError: _not_found,
        SessionDataTooLargeError: _too_large,
        SessionVersionConflict: _version_conflict,
        SessionStoreException: _store_unavailable,
        SessionStoreFullError: _store_full,
        SessionCleanupException: _cleanup_failed,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
    app.state.problem_prefix = prefix
    host_http = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    host_invalid = app.exception_handlers.get(RequestValidationError, request_validation_exception_handler)

    async def http_error(request: Request, exc: Exception) -> Response:
        if not _ours(request) or not isinstance(exc, StarletteHTTPException):
            return await _answer(host_http(request, exc))
        return problem(exc.status_code, str(exc.detail), exc.headers)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        if not _ours(request) or not isinstance(exc, RequestValidationError):
            return await _answer(host_invalid(request, exc))
        return _invalid(exc)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


async def _answer(answer: Response | Awaitable[Response]) -> Response:
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


async def _not_found(request: Request, exc: Exception) -> Response:
    return await _as_http(request, HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND))


async def _too_large(request: Request, exc: Exception) -> Response:
    return await _as_http(request, HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)))


async def _version_conflict(request: Request, exc: Exception) -> Response:
    """412 naming the current version (body and ETag), so the client can re-read and retry."""
    current = exc.current_version if isinstance(exc, SessionVersionConflict) else 0
    return problem(status.HTTP_412_PRECONDITION_FAILED, VERSION_CONFLICT, {"ETag": etag(current)}, version=current)


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    return problem(status.HTTP_503_SERVICE_UNAVAILABLE, STORE_UNAVAILABLE)


async def _store_full(request: Request, exc: Exception) -> Response:
    """New sessions refused at the store's budget: the client may try again after Retry-After."""
    retry_after = exc.retry_after_s if isinstance(exc, SessionStoreFullError) else 30
    headers = {"Retry-After": str(retry_after)}
    return problem(status.HTTP_503_SERVICE_UNAVAILABLE, "session store full, retry later", headers)


async def _cleanup_failed(request: Request, exc: Exception) -> Response:
    """An admin's cleanup run that could not proceed: the 503 says why (the run id, what failed)."""
    return await _as_http(request, HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)))
