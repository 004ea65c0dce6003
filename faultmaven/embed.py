"""Sessions inside an existing FastAPI app, in one call; create_app builds the served app the same way.

`install` adds the session routes, /health and /metrics (at paths of the host's choosing), the body
limit and CORS for the session routes, the 503 for an unreachable store, and the manager's start and stop
inside the host app's lifespan, which keeps running around them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from faultmaven.api import router
from faultmaven.body_limit import BodyLimitMiddleware
from faultmaven.config.config import Settings
from faultmaven.cors import SessionCORSMiddleware
from faultmaven.exceptions import SessionStoreException, SessionStoreFullError
from faultmaven.observability import prometheus
from faultmaven.observability.health import health_report
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.session_management import SessionManager


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": "session store unavailable"}, status_code=503)


async def _store_full(request: Request, exc: Exception) -> Response:
    """New sessions refused at the store's budget: the client may try again after Retry-After."""
    retry_after = exc.retry_after_s if isinstance(exc, SessionStoreFullError) else 30
    headers = {"Retry-After": str(retry_after)}
    return JSONResponse({"detail": "session store full, retry later"}, status_code=503, headers=headers)


def install(
    app: FastAPI,
    *,
    settings: Settings | None = None,
    manager: SessionManager | None = None,
    mount_path: str = "",
    health_path: str | None = "/health",
    metrics_path: str | None = "/metrics",
) -> None:
    """Serve FaultMaven sessions from `app`; call it once, before the app starts.

    The manager is `manager`, or one built when the app starts from `settings` (default:
    Settings.from_env()); it is `app.state.session_manager` from then on, before the host's own lifespan
    runs, and is closed (its cleanup scheduler stopped) after the host's lifespan has ended. The cleanup
    scheduler runs while the app does when its settings' cleanup_enabled is true. The session routes
    are served at `mount_path` + /api/v1/sessions (`mount_path` "" or like "/sessions-service"; Location
    headers follow it); `health_path` and `metrics_path` (None: left out) are /health and the Prometheus
    text. The body limit and CORS (SESSION_CORS_ORIGINS) apply to
    the session routes only, so the host's own routes are served as before.
    """
    prefix = mount_path + router.prefix
    monitor = LoopMonitor()
    app.state.loop_monitor = monitor
    app.state.session_routes_prefix = prefix
    if manager is not None:
        app.state.session_manager = manager  # usable even by a client that does not run the lifespan
    app.add_middleware(BodyLimitMiddleware, path_prefix=prefix)
    app.add_middleware(SessionCORSMiddleware, path_prefix=prefix)  # outside: a 413 carries CORS headers too
    app.add_exception_handler(SessionStoreException, _store_unavailable)
    app.add_exception_handler(SessionStoreFullError, _store_full)
    app.include_router(router, prefix=mount_path)
    registry = prometheus.make_registry(lambda: app.state.session_manager, monitor)

    async def health(request: Request) -> dict[str, Any]:
        return health_report(request.app.state.session_manager)

    async def metrics() -> Response:
        return Response(prometheus.render(registry), media_type=prometheus.CONTENT_TYPE)

    if health_path is not None:
        app.add_api_route(health_path, health, methods=["GET"])
    if metrics_path is not None:
        app.add_api_route(metrics_path, metrics, methods=["GET"])

    host_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:  # the host's lifespan state, or None
        mgr = manager if manager is not None else SessionManager(settings=settings or Settings.from_env())
        app.state.session_manager = mgr
        try:
            with contextlib.suppress(SessionStoreException):  # a store that is down now is reported by /health
                await mgr.refresh_store_stats()
            monitor.start()
            if mgr.settings.cleanup_enabled:
                await mgr.start_cleanup_scheduler(mgr.settings.cleanup_interval_minutes)
            async with host_lifespan(host) as state:
                yield state
        finally:
            await mgr.close()
            await monitor.stop()

    app.router.lifespan_context = lifespan
