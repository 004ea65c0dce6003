"""The FastAPI app: one SessionManager per app, built in the lifespan, shared by routes and /health.

Importing this module never reads the environment strictly: settings are read when the app starts.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from faultmaven import __version__
from faultmaven.api import router
from faultmaven.config.config import Settings
from faultmaven.exceptions import SessionStoreException
from faultmaven.observability import prometheus
from faultmaven.observability.access_log import AccessLogMiddleware
from faultmaven.observability.health import health_report
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.session_management import SessionManager

# Far above the largest valid body (SESSION_MAX_DATA_BYTES of data plus JSON around it); the precise
# limit is applied to the data itself, with a 413 that says which limit.
MAX_BODY_BYTES = 4 * 1024 * 1024


class BodyLimitMiddleware:
    """Refuses a request body larger than any valid one (413) before it is read or parsed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def limit(scope: Scope) -> int:
        """MAX_BODY_BYTES, or room for twice the configured SESSION_MAX_DATA_BYTES if that is more."""
        manager = getattr(scope["app"].state, "session_manager", None)
        data_limit = manager.settings.max_data_bytes if manager is not None else 0
        return max(MAX_BODY_BYTES, 2 * data_limit + 65536)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit(scope)):
                status = 413 if length.isdigit() else 400
                await JSONResponse({"detail": "request body too large or malformed length"}, status)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings | None = None, manager: SessionManager | None = None, *, freeze_gc: bool = False
) -> FastAPI:
    """Build the app. Without arguments the lifespan reads Settings.from_env() and builds the manager.

    `freeze_gc` (the served app sets it) moves every object alive at start-up (modules, the framework)
    out of the cyclic collector's reach, so its full collections no longer pause the loop for ~45 ms.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mgr = manager if manager is not None else SessionManager(settings=settings or Settings.from_env())
        app.state.session_manager = mgr
        with contextlib.suppress(SessionStoreException):  # a store that is down now is reported by /health
            await mgr.refresh_store_stats()
        if freeze_gc:
            gc.collect()
            gc.freeze()
        monitor.start()
        if mgr.settings.cleanup_enabled:
            await mgr.start_cleanup_scheduler(mgr.settings.cleanup_interval_minutes)
        try:
            yield
        finally:
            await mgr.close()
            await monitor.stop()

    monitor = LoopMonitor()
    app = FastAPI(title="FaultMaven sessions", version=__version__, lifespan=lifespan)
    app.state.loop_monitor = monitor
    if manager is not None:
        app.state.session_manager = manager  # usable even by a client that does not run the lifespan
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AccessLogMiddleware)

    @app.exception_handler(SessionStoreException)
    async def store_unavailable(request: Request, exc: SessionStoreException) -> JSONResponse:
        return JSONResponse({"detail": "session store unavailable"}, status_code=503)

    app.include_router(router)
    registry = prometheus.make_registry(lambda: app.state.session_manager, monitor)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        return health_report(request.app.state.session_manager)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(prometheus.render(registry), media_type=prometheus.CONTENT_TYPE)

    return app


app = create_app(freeze_gc=True)
