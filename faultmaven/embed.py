"""Sessions inside an existing FastAPI app, in one call; create_app builds the served app the same way.

`install` adds the session routes, /health and /metrics (at paths of the host's choosing), the body
limit and CORS for the session routes, the HTTP answers to the service's errors (faultmaven.web.errors),
and the manager's start and stop inside the host app's lifespan, which keeps running around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response

from faultmaven.config.config import Settings
from faultmaven.exceptions import SessionStoreException
from faultmaven.lifecycle.background import STATS_REFRESH_S, refresh_stats, restore, snapshot_on_stop, snapshots
from faultmaven.observability import prometheus
from faultmaven.observability.health import health_report
from faultmaven.observability.logging import configure_embedded, redact_uvicorn_access_log
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.session_management import SessionManager
from faultmaven.web.body_limit import BodyLimitMiddleware
from faultmaven.web.cors import SessionCORSMiddleware
from faultmaven.web.errors import install_error_handlers
from faultmaven.web.guard import FailureGuard
from faultmaven.web.reads import SessionReads
from faultmaven.web.routes import AuthenticateFirst, router

log = logging.getLogger("faultmaven.sessions")


def install(
    app: FastAPI,
    *,
    settings: Settings | None = None,
    manager: SessionManager | None = None,
    mount_path: str = "",
    health_path: str | None = "/health",
    metrics_path: str | None = "/metrics",
    configure_logging: bool = True,
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

    When the app starts, the service logs as `python -m faultmaven` does (JSON lines, the audit file of
    SESSION_AUDIT_LOG_PATH, uvicorn's access log without session ids) unless logging was configured for
    it already; `configure_logging=False` leaves logging to a host that owns it (session ids are still
    redacted from uvicorn's access log).
    """
    monitor = LoopMonitor()
    app.state.loop_monitor = monitor
    app.state.failure_guard = FailureGuard()
    if manager is not None:
        app.state.session_manager = manager  # usable even by a client that does not run the lifespan
    _add_session_routes(app, mount_path)
    _add_observability(app, monitor, health_path, metrics_path)
    app.router.lifespan_context = _lifespan(app, manager, settings, monitor, configure_logging)


def _add_session_routes(app: FastAPI, mount_path: str) -> None:
    """The routes under `mount_path`, with the body limit and CORS for them and the errors' answers."""
    prefix = mount_path + router.prefix
    app.state.session_routes_prefix = prefix
    app.add_middleware(SessionReads, path_prefix=prefix)  # innermost: after the checks, ahead of the router
    app.add_middleware(BodyLimitMiddleware, path_prefix=prefix)
    app.add_middleware(AuthenticateFirst, path_prefix=prefix)  # outside the body limit: who before what
    app.add_middleware(SessionCORSMiddleware, path_prefix=prefix)  # outside: a 413 carries CORS headers too
    install_error_handlers(app, prefix)
    app.include_router(router, prefix=mount_path)


def _add_observability(app: FastAPI, monitor: LoopMonitor, health_path: str | None, metrics_path: str | None) -> None:
    """/health from the manager that serves the routes, and the Prometheus text; each left out if None."""
    registry = prometheus.make_registry(lambda: app.state.session_manager, monitor)

    async def health(request: Request) -> dict[str, Any]:
        return health_report(request.app.state.session_manager)

    async def metrics() -> Response:
        return Response(prometheus.render(registry), media_type=prometheus.CONTENT_TYPE)

    if health_path is not None:
        app.add_api_route(health_path, health, methods=["GET"])
    if metrics_path is not None:
        app.add_api_route(metrics_path, metrics, methods=["GET"])


Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def _lifespan(
    app: FastAPI, manager: SessionManager | None, settings: Settings | None, monitor: LoopMonitor, logs: bool
) -> Lifespan:
    """The host's lifespan inside the manager's: built (unless given) and started before, closed after."""
    host_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:  # the host's lifespan state, or None
        mgr = manager if manager is not None else SessionManager(settings=settings or Settings.from_env())
        app.state.session_manager = mgr
        redact_uvicorn_access_log()
        if logs:  # the app's own access log (create_app) replaces uvicorn's; a host app keeps uvicorn's
            configure_embedded(mgr.settings.audit_log_path, uvicorn_access=not getattr(app.state, "access_log", False))
        tasks: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        try:
            await restore(mgr)
            await _start(mgr, monitor)
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(refresh_stats(mgr, STATS_REFRESH_S, stop))]
            tasks += [loop.create_task(job) for job in snapshots(mgr, stop)]
            async with host_lifespan(host) as state:
                yield state
        finally:
            stop.set()  # ends the loops even where a client library swallowed the cancellation
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await snapshot_on_stop(mgr)
            await mgr.close()
            await monitor.stop()

    return lifespan


def store_location(settings: Settings) -> str:
    """SESSION_STORE_URL's scheme and host:port(s), without credentials or options."""
    parts = urlsplit(settings.store_url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def warn_if_open(settings: Settings) -> None:
    """One warning at start for each identity setting that lets a caller claim more than it should."""
    if settings.identity_source is None:
        log.warning(
            "No identity source (SESSION_USER_HEADER or SESSION_JWT_SECRET/SESSION_JWT_PUBLIC_KEY): any caller "
            "may name any user in a request body, resume or end that user's sessions; serve it to trusted "
            "clients only",
            extra={"allow_unauthenticated": settings.allow_unauthenticated},
        )
    elif settings.identity_source == "bearer JWT" and (settings.jwt_audience is None or settings.jwt_issuer is None):
        unset = [name for name in ("audience", "issuer") if getattr(settings, f"jwt_{name}") is None]
        log.warning(
            "Bearer tokens are accepted whatever their "
            + " and ".join(unset)
            + ": set SESSION_JWT_AUDIENCE and SESSION_JWT_ISSUER to accept only tokens minted for this service",
        )


async def _start(manager: SessionManager, monitor: LoopMonitor) -> None:
    """The identity warnings, the first store stats, the loop monitor and, when enabled, the cleanup
    scheduler."""
    warn_if_open(manager.settings)
    try:
        await manager.refresh_store_stats()
    except SessionStoreException as exc:  # served anyway: /health says unhealthy until it answers
        log.error(
            "Session store unreachable at start", extra={"store": store_location(manager.settings), "error": str(exc)}
        )
    monitor.start()
    if manager.settings.cleanup_enabled:
        await manager.start_cleanup_scheduler(manager.settings.cleanup_interval_minutes)
