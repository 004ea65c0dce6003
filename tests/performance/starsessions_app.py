"""The most used Python peer of a session service, set up as its documentation says: FastAPI with
starsessions' SessionMiddleware, rolling=True and a 30-minute lifetime (the same sliding expiry as ours),
the session loaded on every request and saved back by the middleware.

- `POST /session`: a new session holding a session-sized document (its cookie names it).
- `GET /session`: the caller's session, as JSON.
PEER_REDIS_URL: starsessions' RedisStore on that redis:// server; unset: its InMemoryStore.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from redis.asyncio import Redis
from starsessions import InMemoryStore, SessionMiddleware, load_session
from starsessions.stores.base import SessionStore

from tests.performance.bare_app import SESSION


def _store() -> SessionStore:
    url = os.environ.get("PEER_REDIS_URL")
    if url is None:
        return InMemoryStore()
    from starsessions.stores.redis import RedisStore

    return RedisStore(connection=Redis.from_url(url))


app = FastAPI()
app.add_middleware(SessionMiddleware, store=_store(), lifetime=1800, rolling=True, cookie_https_only=False)


@app.post("/session")
async def create(request: Request) -> dict[str, Any]:
    await load_session(request)
    request.session.update(SESSION)
    return {"created": True}


@app.get("/session")
async def read(request: Request) -> dict[str, Any]:
    await load_session(request)
    return dict(request.session)
