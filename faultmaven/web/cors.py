"""CORS for the session routes, through Starlette's CORSMiddleware, from SESSION_CORS_ORIGINS.

The settings are those of the manager that serves the routes, known only once the app has started, so the
CORSMiddleware is built on the first request and rebuilt only if the app's manager changes. Without
origins nothing CORS-related is added to any response. A request from an origin that is not allowed
passes by the CORSMiddleware entirely: it gets no Access-Control-* header at all (a preflight from it is
an ordinary OPTIONS, which the routes do not serve).
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faultmaven.config.config import Settings
from faultmaven.web.errors import under

ALLOWED_METHODS = ("GET", "POST", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-Session-Id", "If-Match")
EXPOSED_HEADERS = ("Location", "ETag", "Retry-After")


def cors_for(app: ASGIApp, settings: Settings) -> CORSMiddleware | None:
    """The CORSMiddleware the settings ask for around `app`, or None when no origin is configured."""
    if not settings.cors_origins:
        return None
    headers = ALLOWED_HEADERS + ((settings.user_header,) if settings.user_header else ())
    return CORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=headers,
        allow_credentials=True,
        expose_headers=EXPOSED_HEADERS,
    )


class SessionCORSMiddleware:
    """Applies `cors_for` the serving manager's settings to the requests under `path_prefix`."""

    def __init__(self, app: ASGIApp, *, path_prefix: str = "") -> None:
        self.app = app
        self.path_prefix = path_prefix
        self._built: tuple[Settings, CORSMiddleware | None] | None = None

    def _cors(self, scope: Scope) -> CORSMiddleware | None:
        manager = getattr(scope["app"].state, "session_manager", None)
        if manager is None:
            return None
        built = self._built
        if built is None or built[0] is not manager.settings:
            built = self._built = (manager.settings, cors_for(self.app, manager.settings))
        return built[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The settings first: without origins (the default) that is the whole of the work per request.
        cors = self._cors(scope) if scope["type"] == "http" else None
        if cors is None or not under(scope["path"], self.path_prefix):
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if origin is None or cors.is_allowed_origin(origin):
            await cors(scope, receive, send)
            return

        async def vary_on_origin(message: Message) -> None:
            # The answer would differ for an allowed origin: a shared cache must keep them apart.
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message).add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, vary_on_origin)
