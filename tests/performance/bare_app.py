"""The peers of the HTTP benchmark, served by the same uvicorn the same way: what the framework (and, on
Redis, one round trip) costs without our route.

- `/bare` (GET, POST, PATCH): a session-sized constant JSON document; PATCH reads its JSON body first.
- `/bare/redis/{key}` (GET, POST, PATCH): one EVALSHA of a one-command script (HGETALL of the key, a
  stored session's hash, so the reply is as large as ours) through the client our store builds
  (`faultmaven.stores.redis.store.connect`, the same pool settings) on BARE_REDIS_URL, a redis:// or
  redis+cluster:// URL. Our GET and heartbeat are one EVALSHA each, so this is the floor of a Redis route.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
HGETALL = "return redis.call('HGETALL', KEYS[1])"
METHODS = ["GET", "POST", "PATCH"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ.get("BARE_REDIS_URL")
    if url is None:
        yield
        return
    from faultmaven.stores.redis.store import connect

    client = connect(url)
    app.state.script = client.register_script(HGETALL)
    await client.script_load(HGETALL)  # as the store loads its scripts once before the first call
    try:
        yield
    finally:
        await client.aclose()


app = FastAPI(lifespan=lifespan)


@app.api_route("/bare", methods=METHODS)
async def bare(request: Request) -> dict[str, Any]:
    if request.method == "PATCH":
        await request.json()
    return SESSION


@app.api_route("/bare/redis/{key:path}", methods=METHODS)
async def bare_redis(key: str, request: Request) -> JSONResponse:
    if request.method == "PATCH":
        await request.json()
    fields = await request.app.state.script(keys=[key])
    return JSONResponse(SESSION | {"fields": len(fields)})
