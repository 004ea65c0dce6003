"""The in-memory store (store.py) and its parts: the expiry index (index*.py), the session layout, the
users' lists and resume pairs, the byte budget and the endings log."""

from faultmaven.stores.memory.store import MemoryStore

__all__ = ["MemoryStore"]
