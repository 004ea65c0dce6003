"""The request body limit, counted as the bytes arrive.

A Content-Length over the limit is refused before the app runs. Every other body (chunked, or longer
than its Content-Length) goes through Starlette's RequestBodyLimitMiddleware, which counts the bytes as
`receive` hands them over: past the limit the read raises, so the route never sees a truncated body,
FastAPI answers 413 at once, and the server discards the rest of the upload as it comes (uvicorn keeps
nothing of a request already answered). Once the app has started its response there is no 413 to give:
the error ends the request and the server closes the connection, so the client never takes a cut-off
body for a whole answer.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# Far above the largest valid body (SESSION_MAX_DATA_BYTES of data plus JSON around it); the precise
# limit is applied to the data itself, with a 413 that says which limit.
MAX_BODY_BYTES = 4 * 1024 * 1024


def body_limit(scope: Scope) -> int:
    """MAX_BODY_BYTES, or room for twice the serving manager's SESSION_MAX_DATA_BYTES if that is more."""
    manager = getattr(scope["app"].state, "session_manager", None)
    data_limit = manager.settings.max_data_bytes if manager is not None else 0
    return max(MAX_BODY_BYTES, 2 * data_limit + 65536)


def under(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it ("" is above every path)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


class BodyLimitMiddleware:
    """Refuses (413) a request body under `path_prefix` larger than any valid one, as it streams in."""

    def __init__(self, app: ASGIApp, *, path_prefix: str = "") -> None:
        self.app = app
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not under(scope["path"], self.path_prefix):
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            status = 413 if length.isdigit() else 400
            await JSONResponse({"detail": "request body too large or malformed length"}, status)(scope, receive, send)
            return
        await RequestBodyLimitMiddleware(self.app, max_body_size=limit)(scope, receive, send)
