"""What a session costs in memory, by the in-memory store's layout: the estimate behind memory_usage_mb
and SESSION_MAX_MEMORY_MB, which the Redis store reuses so both stores count a session alike."""

from __future__ import annotations

import sys

# Bytes one session costs besides its strings: both tuples, three floats, two ints, its share of the dict
# (entry plus index slot at the dict's average fill). Checked against tracemalloc in tests.
_NODE_BYTES = sys.getsizeof((None,) * 7) + sys.getsizeof((None,) * 10) + 3 * sys.getsizeof(0.0) + 2 * 32 + 48
_USER_LINK_BYTES = sys.getsizeof((None, None)) + 48  # the user links and their share of that dict
_PAIR_ENTRY_BYTES = 48  # a resume pair's share of its dict


def session_bytes(sid: str, user_id: str | None, blob: bytes, meta: bytes = b"{}", client_id: str | None = None) -> int:
    """The estimate of what one session costs in memory: what memory_usage_mb adds up."""
    size = _NODE_BYTES + sys.getsizeof(sid) + sys.getsizeof(blob) + (sys.getsizeof(meta) if meta != b"{}" else 0)
    if user_id:
        size += sys.getsizeof(user_id) + _USER_LINK_BYTES
    if client_id:  # the client id, and the resume pair that names the session
        size += sys.getsizeof(client_id) + sys.getsizeof(pair_key(user_id, client_id)) + _PAIR_ENTRY_BYTES
    return size


def pair_key(user_id: str | None, client_id: str) -> str:
    """The resume key: a client id alone for anonymous sessions, else client and user (never ambiguous:
    user ids carry no control characters)."""
    return client_id if user_id is None else f"{client_id}\x1f{user_id}"
