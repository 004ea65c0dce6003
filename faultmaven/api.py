"""The /api/v1/sessions routes; every one reaches the manager on app.state, the one /health reads."""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from faultmaven.exceptions import (
    SessionCleanupException,
    SessionDataTooLargeError,
    SessionNotFoundError,
    SessionStoreException,
)
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.session_management import MAX_USER_ID_LENGTH, SessionManager

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])
_bearer = HTTPBearer(auto_error=False)
_NOT_FOUND = "session not found"


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(default=None, max_length=MAX_USER_ID_LENGTH)
    data: dict[str, Any] | None = None


class UpdateSession(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: dict[str, Any]


def get_manager(request: Request) -> SessionManager:
    manager: SessionManager = request.app.state.session_manager
    return manager


Manager = Annotated[SessionManager, Depends(get_manager)]


def _too_large(exc: SessionDataTooLargeError) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc))


def _invalid(exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_session(body: CreateSession, manager: Manager, response: Response) -> dict[str, Any]:
    try:
        session = await manager.create_session(body.user_id, body.data)
    except SessionDataTooLargeError as exc:
        raise _too_large(exc) from None
    except (TypeError, ValueError) as exc:
        raise _invalid(exc) from None
    response.headers["Location"] = f"{router.prefix}/{session.session_id}"
    return session.to_dict()


@router.get("/metrics")
async def session_metrics(manager: Manager, request: Request) -> dict[str, Any]:
    """The manager's metrics plus the event loop's longest stalls, as the load harness reads them."""
    monitor: LoopMonitor = request.app.state.loop_monitor
    try:
        return manager.get_session_metrics() | monitor.snapshot()
    except SessionStoreException as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"session store unavailable: {exc}") from None


@router.post("/cleanup")
async def trigger_cleanup(
    manager: Manager,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    max_age_minutes: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
) -> dict[str, Any]:
    token = manager.settings.admin_token
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Not Found")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="admin token required", headers={"WWW-Authenticate": "Bearer"}
        )
    started = time.perf_counter()
    try:
        cleaned = await manager.run_cleanup(max_age_minutes, trigger="admin")
    except SessionCleanupException as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    return {"cleaned": cleaned, "duration_ms": round((time.perf_counter() - started) * 1000.0, 3)}


@router.get("/{session_id}")
async def get_session(session_id: str, manager: Manager) -> dict[str, Any]:
    session = await manager.get_session(session_id)
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_NOT_FOUND)
    return session.to_dict()


@router.post("/{session_id}/heartbeat")
async def heartbeat(session_id: str, manager: Manager) -> dict[str, Any]:
    session = await manager.touch_session(session_id)
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_NOT_FOUND)
    return {"session_id": session.session_id, "expires_at": session.expires_at.isoformat()}


@router.patch("/{session_id}")
async def update_session(session_id: str, body: UpdateSession, manager: Manager) -> dict[str, Any]:
    try:
        session = await manager.update_session(session_id, body.data)
    except SessionNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_NOT_FOUND) from None
    except SessionDataTooLargeError as exc:
        raise _too_large(exc) from None
    except (TypeError, ValueError) as exc:
        raise _invalid(exc) from None
    return session.to_dict()


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: str, manager: Manager) -> Response:
    if not await manager.delete_session(session_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_NOT_FOUND)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
