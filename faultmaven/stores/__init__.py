"""Session stores behind one protocol; `store_from_url` picks one from SESSION_STORE_URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from faultmaven.exceptions import ConfigError
from faultmaven.stores.base import BatchResult, Ended, SessionStore, StoreStats
from faultmaven.stores.memory import MemoryStore

__all__ = ["BatchResult", "Ended", "MemoryStore", "SessionStore", "StoreStats", "store_from_url"]


def store_from_url(url: str) -> SessionStore:
    """Build the store a SESSION_STORE_URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    raise ConfigError(f"SESSION_STORE_URL={url!r}: no store is available for the scheme {scheme!r}")
