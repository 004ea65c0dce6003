"""The peer of the HTTP benchmark: one FastAPI route answering a session-sized constant JSON document,
served by the same uvicorn the same way. What the framework costs without our route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

SESSION = {
    "session_id": "x" * 45,
    "user_id": "user-1",
    "client_id": "copilot-browser-1",
    "session_type": "troubleshooting",
    "status": "active",
    "created_at": "2026-11-26T10:00:00+00:00",
    "last_activity": "2026-11-26T10:05:00+00:00",
    "expires_at": "2026-11-26T12:05:00+00:00",
    "timeout_minutes": 120.0,
    "session_resumed": False,
    "data": {},
    "metadata": {},
}

app = FastAPI()


@app.get("/bare")
async def bare() -> dict[str, Any]:
    return SESSION
