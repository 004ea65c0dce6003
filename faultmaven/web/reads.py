"""GET of a session, the request a client makes on every step, served ahead of the router.

The read goes from the middleware stack straight to the manager and back: the router's matching,
FastAPI's request handling and its exception layers cost more than the read itself. What the client
gets is what the route gives: the route's own answer (`session_json`, the same bytes and headers), and
for an error the answer of the handler the app would pick for it (its status handlers, then its
exception handlers by class), after the same translation the route makes (the error table's HTTPException
for a route error). The access log names the route's template. Any other path or method, and a malformed
id, take the usual way.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from faultmaven.exceptions import SessionNotFoundError
from faultmaven.session import is_valid_id
from faultmaven.web.errors import NOT_FOUND, ROUTE_ERRORS, handler_for, http_exception_of, settled
from faultmaven.web.routes import get_session, identify, router, session_json


class SessionReads:
    """Serves `GET <prefix>/<session id>`; passes every other request on."""

    def __init__(self, app: ASGIApp, path_prefix: str) -> None:
        self.app, self.ids_from = app, path_prefix + "/"
        self._route: BaseRoute | None = None  # the router's GET route of a session, for the access log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "GET" and path.startswith(self.ids_from):
            session_id = path[len(self.ids_from) :]
            manager = getattr(scope["app"].state, "session_manager", None)  # only for a path of the reads
            if is_valid_id(session_id) and manager is not None:
                scope["route"] = self._route or self._find_route(scope)
                await self._read(manager, session_id, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _read(self, manager: Any, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            session = await manager.get_session(session_id, user_id=identify(request))
            if session is None:
                raise SessionNotFoundError(NOT_FOUND)
        except Exception as exc:
            error = http_exception_of(exc) if isinstance(exc, ROUTE_ERRORS) else exc
            handler = handler_for(scope["app"].exception_handlers, error)
            if handler is None:
                raise
            response = await settled(handler(request, error))
        else:
            response = session_json(session)
        await response(scope, receive, send)

    def _find_route(self, scope: Scope) -> BaseRoute | None:
        """The route object the router would put in the scope: the app's copy of the session GET route
        where FastAPI copies included routes, else the router's own."""
        routes = [*scope["app"].router.routes, *router.routes]
        self._route = next((r for r in routes if getattr(r, "endpoint", None) is get_session), None)
        return self._route
