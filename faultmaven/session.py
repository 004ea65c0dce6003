"""The session value type, session ids, log fingerprints and the data encoding.

Stores keep a session's data as compact UTF-8 JSON bytes: the size limit is measured on exactly what is
kept, every read hands out a fresh copy, and the memory estimate is the length of what is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faultmaven.exceptions import SessionDataTooLargeError

ID_BYTES = 32
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
_FINGERPRINT_KEY = secrets.token_bytes(32)
MAX_DATA_DEPTH = 64  # nesting of objects and arrays; far deeper would not serialise back out over HTTP


def new_session_id() -> str:
    """256 random bits, URL-safe: 43 characters of [A-Za-z0-9_-]."""
    return secrets.token_urlsafe(ID_BYTES)


def is_valid_id(value: object) -> bool:
    """True only for strings shaped like `new_session_id()` output; anything else never reaches a store."""
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def fingerprint(session_id: str) -> str:
    """A short keyed digest to correlate log lines without writing the id itself."""
    return hmac.new(_FINGERPRINT_KEY, session_id.encode(), hashlib.sha256).hexdigest()[:12]


def encode_data(data: Mapping[str, Any] | None, limit: int) -> bytes:
    """Compact UTF-8 JSON of `data`; TypeError/ValueError if not a JSON object, too large if over `limit`."""
    if data is None:
        return b"{}"
    if not isinstance(data, Mapping):
        raise TypeError("session data must be a JSON object (a mapping)")
    _check_depth(data)
    try:
        text = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise ValueError("session data is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"session data is not JSON-serialisable: {exc}") from None
    blob = text.encode()
    if len(blob) > limit:
        raise SessionDataTooLargeError(len(blob), limit)
    return blob


def _check_depth(data: object) -> None:
    """ValueError if objects and arrays nest deeper than MAX_DATA_DEPTH (checked without recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > MAX_DATA_DEPTH:
            raise ValueError(f"session data is nested too deeply (more than {MAX_DATA_DEPTH} levels)")
        stack.extend((child, depth + 1) for child in children)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What a store keeps for one session: epoch-second floats and the encoded data."""

    session_id: str
    user_id: str | None
    created_at: float
    last_activity: float
    blob: bytes

    def to_session(self, timeout_s: float) -> Session:
        return Session(
            session_id=self.session_id,
            user_id=self.user_id,
            created_at=_utc(self.created_at),
            last_activity=_utc(self.last_activity),
            expires_at=_utc(self.last_activity + timeout_s),
            data=json.loads(self.blob),
        )


@dataclass(frozen=True, slots=True)
class Session:
    """A snapshot of one session; timestamps are timezone-aware UTC."""

    session_id: str
    user_id: str | None
    created_at: datetime
    last_activity: datetime
    expires_at: datetime
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape served over HTTP."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "created_at": self.created_at.isoformat(),
            "last_activity": self.last_activity.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "data": self.data,
        }
