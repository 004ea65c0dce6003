"""The request body limit, counted as the bytes arrive.

A Content-Length over the limit is refused before the app runs. Every other body (chunked, or longer
than its Content-Length) goes through Starlette's RequestBodyLimitMiddleware, which counts the bytes as
`receive` hands them over: past the limit the read raises, so the route never sees a truncated body,
FastAPI answers 413 at once, and the server discards the rest of the upload as it comes (uvicorn keeps
nothing of a request already answered). Once the app has started its response there is no 413 to give:
the error ends the request and the server closes the connection, so the client never takes a cut-off
body for a whole answer.

A request that carries no body to count passes straight through: a GET, HEAD, DELETE or OPTIONS (no
session route reads a body on them), and one that declares an empty body (Content-Length: 0, no
Transfer-Encoding), whose length the server enforces. The limit is worked out once per manager settings,
not per request.
"""

from __future__ import annotations

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from faultmaven.config.config import Settings
from faultmaven.web.errors import BadRequest, BodyTooLarge, problem_for, under

# Far above the largest valid body (SESSION_MAX_DATA_BYTES of data plus JSON around it); the precise
# limit is applied to the data itself, with a 413 that says which limit.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Methods whose session routes never read a body: nothing arrives through `receive` to count.
BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
REFUSED = "request body too large or malformed length"


def limit_for(settings: Settings | None) -> int:
    """MAX_BODY_BYTES, or room for twice SESSION_MAX_DATA_BYTES if that is more."""
    data_limit = settings.max_data_bytes if settings is not None else 0
    return max(MAX_BODY_BYTES, 2 * data_limit + 65536)


def _declared_length(scope: Scope) -> tuple[bytes | None, bool]:
    """The Content-Length header (raw) and whether a Transfer-Encoding is declared."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class BodyLimitMiddleware:
    """Refuses (BodyTooLarge) a request body under `path_prefix` larger than any valid one, as it streams in."""

    def __init__(self, app: ASGIApp, *, path_prefix: str = "") -> None:
        self.app = app
        self.path_prefix = path_prefix
        self._limit: tuple[Settings | None, int, RequestBodyLimitMiddleware] | None = None

    def _limited(self, scope: Scope) -> tuple[int, RequestBodyLimitMiddleware]:
        """The limit and its counting middleware, rebuilt only when the serving manager's settings change."""
        manager = getattr(scope["app"].state, "session_manager", None)
        settings = manager.settings if manager is not None else None
        built = self._limit
        if built is None or built[0] is not settings:
            limit = limit_for(settings)
            built = self._limit = (settings, limit, RequestBodyLimitMiddleware(self.app, max_body_size=limit))
        return built[1], built[2]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not under(scope["path"], self.path_prefix):
            await self.app(scope, receive, send)
            return
        length, chunked = _declared_length(scope)
        if length is not None:
            limit = self._limited(scope)[0]
            if not length.isdigit() or int(length) > limit:
                refused = BodyTooLarge(REFUSED) if length.isdigit() else BadRequest(REFUSED)
                await problem_for(refused)(scope, receive, send)
                return
        if scope["method"] in BODILESS_METHODS or (length == b"0" and not chunked):
            await self.app(scope, receive, send)
            return
        await self._limited(scope)[1](scope, receive, send)
