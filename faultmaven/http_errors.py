"""The service's errors as HTTP answers, in one place: the app's handlers for faultmaven's exceptions.

Only faultmaven's own exception classes get a handler, so a host app that embeds the sessions keeps its
own answers to everything else (a bare ValueError of its code stays its business). The manager's argument
checks raise plain TypeError / ValueError; the routes turn those into a 422 where they call the manager
(`checked`), not app-wide. Answers that were HTTPExceptions go through the app's HTTPException handler, so
a host that formats its errors its own way formats these the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from faultmaven.conditional import etag
from faultmaven.exceptions import (
    SessionCleanupException,
    SessionDataTooLargeError,
    SessionNotFoundError,
    SessionStoreException,
    SessionStoreFullError,
    SessionVersionConflict,
)

NOT_FOUND = "session not found"
STORE_UNAVAILABLE = "session store unavailable"
VERSION_CONFLICT = "If-Match does not name the current version of the session's data"
_T = TypeVar("_T")
Handler = Callable[[Request, Exception], Awaitable[Response]]


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


def install_error_handlers(app: FastAPI) -> None:
    """Map faultmaven's exceptions to their HTTP answers on `app` (the most specific class wins)."""
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
    app.add_exception_handler(RequestValidationError, _invalid_request)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """422 with each field error's place, message and type, never the input: it may be a value JSON
    cannot carry (NaN, Infinity) or one the caller should not see echoed."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


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
    body = {"detail": VERSION_CONFLICT, "version": current}
    return JSONResponse(body, status.HTTP_412_PRECONDITION_FAILED, {"ETag": etag(current)})


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": STORE_UNAVAILABLE}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


async def _store_full(request: Request, exc: Exception) -> Response:
    """New sessions refused at the store's budget: the client may try again after Retry-After."""
    retry_after = exc.retry_after_s if isinstance(exc, SessionStoreFullError) else 30
    headers = {"Retry-After": str(retry_after)}
    return JSONResponse({"detail": "session store full, retry later"}, status_code=503, headers=headers)


async def _cleanup_failed(request: Request, exc: Exception) -> Response:
    """An admin's cleanup run that could not proceed: the 503 says why (the run id, what failed)."""
    return await _as_http(request, HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)))
