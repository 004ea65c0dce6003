"""The FastAPI app: one SessionManager per app, built in the lifespan, shared by routes and /health.

Importing this module never reads the environment strictly: settings are read when the app starts.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from faultmaven import __version__
from faultmaven.config.config import Settings
from faultmaven.embed import install
from faultmaven.session_management import SessionManager
from faultmaven.web.access_log import AccessLogMiddleware
from faultmaven.web.docs_assets import serve_docs_offline


def create_app(
    settings: Settings | None = None, manager: SessionManager | None = None, *, freeze_gc: bool = False
) -> FastAPI:
    """Build the app. Without arguments the lifespan reads Settings.from_env() and builds the manager.

    `freeze_gc` (the served app sets it) moves every object alive at start-up (modules, the framework)
    out of the cyclic collector's reach, so its full collections no longer pause the loop for ~45 ms.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if freeze_gc:  # runs inside the sessions' start-up: the manager and its store exist by now
            gc.collect()
            gc.freeze()
        yield

    app = FastAPI(title="FaultMaven sessions", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install(app, settings=settings, manager=manager)
    serve_docs_offline(app)
    app.add_middleware(AccessLogMiddleware)
    app.state.access_log = True  # one JSON record per request, without ids: uvicorn's stays off
    app.state.problem_prefix = ""  # the whole app is the service: every error is a problem details object
    return app


app = create_app(freeze_gc=True)
