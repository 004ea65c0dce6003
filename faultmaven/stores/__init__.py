"""Session stores behind one protocol; `store_from_url` picks one from SESSION_STORE_URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from faultmaven.exceptions import ConfigError
from faultmaven.stores.base import BatchResult, Ended, SessionStore, StoreStats
from faultmaven.stores.memory import MemoryStore

__all__ = ["BatchResult", "Ended", "MemoryStore", "SessionStore", "StoreStats", "store_from_url"]


def store_from_url(url: str, max_memory_mb: float | None = None) -> SessionStore:
    """Build the store a SESSION_STORE_URL names, with the memory budget where the store enforces one."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore(max_bytes=None if max_memory_mb is None else int(max_memory_mb * 1024 * 1024))
    if scheme in ("redis", "redis+cluster"):
        from faultmaven.stores.redis import RedisStore  # redis-py is needed only for this store

        return RedisStore(url)
    raise ConfigError(f"SESSION_STORE_URL={url!r}: no store is available for the scheme {scheme!r}")
