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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faultmaven.exceptions import SessionDataTooLargeError

ID_BYTES = 32
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}(?:[0-9]{2})?")  # a sharded store's ids carry two digits more
_CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,128}")
MAX_USER_ID_LENGTH = 256
_USER_ID_PATTERN = re.compile(rf"[^\x00-\x1f\x7f]{{1,{MAX_USER_ID_LENGTH}}}")
_FINGERPRINT_KEY = secrets.token_bytes(32)
MAX_DATA_DEPTH = 64  # nesting of objects and arrays; far deeper would not serialise back out over HTTP


def new_session_id() -> str:
    """256 random bits, URL-safe: 43 characters of [A-Za-z0-9_-]."""
    return secrets.token_urlsafe(ID_BYTES)


def is_valid_id(value: object) -> bool:
    """True only for strings shaped like a session id (a sharded store's carry two digits more); anything
    else never reaches a store."""
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def fingerprint(session_id: str) -> str:
    """A short keyed digest to correlate log lines without writing the id itself."""
    return hmac.new(_FINGERPRINT_KEY, session_id.encode(), hashlib.sha256).hexdigest()[:12]


def encode_data(data: Mapping[str, Any] | None, limit: int, name: str = "session data") -> bytes:
    """Compact UTF-8 JSON of `data`; TypeError/ValueError if not a JSON object, too large if over `limit`."""
    if data is None:
        return b"{}"
    if not isinstance(data, Mapping):
        raise TypeError(f"{name} must be a JSON object (a mapping)")
    _check_depth(data)
    try:
        text = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise ValueError(f"{name} is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None
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


def check_client_id(value: object) -> str:
    """A client id: 8-128 characters of [A-Za-z0-9_-] (a UUID fits); ValueError otherwise."""
    if not isinstance(value, str) or _CLIENT_ID_PATTERN.fullmatch(value) is None:
        raise ValueError("client_id must be 8 to 128 characters of [A-Za-z0-9_-]")
    return value


def check_user_id(value: object) -> str:
    """A user id: 1-256 printable characters (no control characters); ValueError otherwise."""
    if not isinstance(value, str) or _USER_ID_PATTERN.fullmatch(value) is None:
        raise ValueError(f"user_id must be 1 to {MAX_USER_ID_LENGTH} characters without control characters")
    return value


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """What a store keeps for one session: epoch-second floats and the encoded data and metadata.

    A session is expired from `expires_at` on: the earlier of its idle deadline (last activity plus its
    own timeout) and its absolute deadline (creation plus the absolute lifetime, which no activity moves).
    """

    session_id: str
    user_id: str | None
    client_id: str | None
    session_type: str
    created_at: float
    last_activity: float
    timeout_s: float
    absolute_at: float
    blob: bytes
    meta: bytes = b"{}"
    version: int = 1  # of the data: 1 at creation, +1 on every write that changes it

    @property
    def expires_at(self) -> float:
        return min(self.last_activity + self.timeout_s, self.absolute_at)

    def to_session(self, *, resumed: bool = False) -> Session:
        return Session(
            session_id=self.session_id,
            user_id=self.user_id,
            created_at=_utc(self.created_at),
            last_activity=_utc(self.last_activity),
            expires_at=_utc(self.expires_at),
            data=json.loads(self.blob),
            client_id=self.client_id,
            session_type=self.session_type,
            metadata=json.loads(self.meta),
            timeout_minutes=self.timeout_s / 60.0,
            absolute_expires_at=_utc(self.absolute_at),
            session_resumed=resumed,
            version=self.version,
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
    client_id: str | None = None
    session_type: str = "troubleshooting"
    metadata: dict[str, Any] = field(default_factory=dict)
    timeout_minutes: float = 30.0
    absolute_expires_at: datetime | None = None
    status: str = "active"
    session_resumed: bool = False
    version: int = 1  # of `data`: 1 at creation, +1 on every change of it, never on activity; the HTTP ETag

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape served over HTTP."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "client_id": self.client_id,
            "session_type": self.session_type,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "last_activity": self.last_activity.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "absolute_expires_at": self.absolute_expires_at.isoformat() if self.absolute_expires_at else None,
            "timeout_minutes": self.timeout_minutes,
            "session_resumed": self.session_resumed,
            "version": self.version,
            "data": self.data,
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """A session that ended, as session-end listeners receive it; timestamps are timezone-aware UTC.

    `reason`: expired, idle (a max-age cleanup), deleted, revoked, user_limit, evicted or rotated (the old id).
    """

    session_id: str
    user_id: str | None
    client_id: str | None
    reason: str
    created_at: datetime
    last_activity: datetime
    ended_at: datetime

    @classmethod
    def from_ending(cls, ending: tuple[str, str | None, str | None, float, float, str], ended_at: float) -> SessionEnd:
        sid, user, client, created, active, reason = ending
        return cls(sid, user, client, reason, _utc(created), _utc(active), _utc(ended_at))
