"""Session stores behind one protocol; `store_from_url` picks one from SESSION_STORE_URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from faultmaven.exceptions import ConfigError
from faultmaven.stores.base import BatchResult, Endings, Report, SessionStore, StoreStats
from faultmaven.stores.memory.store import MemoryStore

__all__ = ["BatchResult", "Endings", "MemoryStore", "Report", "SessionStore", "StoreStats", "store_from_url"]


def store_from_url(
    url: str,
    max_memory_mb: float | None = None,
    *,
    policy: str = "reject",
    redis_reserve: float = 0.10,
    redis_max_memory_mb: float | None = None,
) -> SessionStore:
    """Build the store a SESSION_STORE_URL names, with the memory budget where the store enforces one
    (on Redis, `redis_max_memory_mb`: SESSION_MAX_MEMORY_MB only when set explicitly)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        max_bytes = None if max_memory_mb is None else int(max_memory_mb * 1024 * 1024)
        return MemoryStore(max_bytes=max_bytes, policy=policy)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from faultmaven.stores.redis.store import RedisStore  # redis-py is needed only for this store

        max_bytes = None if redis_max_memory_mb is None else int(redis_max_memory_mb * 1024 * 1024)
        return RedisStore(url, policy=policy, memory_reserve=redis_reserve, max_bytes=max_bytes)
    raise ConfigError(f"SESSION_STORE_URL: no store is available for the scheme {scheme!r}")
