"""Argument checks of the Python API: a bad value is a TypeError or ValueError naming it (422 over HTTP),
raised before the store is touched."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from faultmaven.config.config import Settings
from faultmaven.exceptions import SessionDataTooLargeError
from faultmaven.session import SessionRecord, check_client_id, check_user_id, encode_data

MAX_PAGE = 1000  # sessions per list_user_sessions page
_SESSION_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def seconds(name: str, value: float, *, allow_zero: bool) -> float:
    """The seconds a minutes argument stands for, once it is checked (TypeError, ValueError)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of minutes, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value) * 60.0


def timeout_seconds(settings: Settings, timeout_minutes: float | None) -> float:
    """A session's idle timeout: the default, or a requested one within the configured bounds."""
    if timeout_minutes is None:
        return settings.timeout_seconds
    value = seconds("timeout_minutes", timeout_minutes, allow_zero=False) / 60.0
    lo, hi = settings.min_timeout_minutes, settings.max_timeout_minutes
    if not lo <= value <= hi:
        raise ValueError(f"timeout_minutes must be between {lo:g} and {hi:g}, got {value:g}")
    return value * 60.0


def check_session_type(session_type: str) -> None:
    if not isinstance(session_type, str) or not _SESSION_TYPE.fullmatch(session_type):
        raise ValueError("session_type must be 1 to 64 characters of [A-Za-z0-9_.-]")


def check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be an integer >= 0")


def check_version(if_version: int | None) -> None:
    if if_version is not None and (isinstance(if_version, bool) or not isinstance(if_version, int)):
        raise TypeError(f"if_version must be an integer version, not {type(if_version).__name__}")


def new_record(
    settings: Settings,
    new_id: Callable[[str | None, str | None], str],
    clock: Callable[[], float],
    *,
    user_id: str | None,
    client_id: str | None,
    timeout_minutes: float | None,
    session_type: str,
    data: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> SessionRecord:
    """The record of a session to create, every argument checked first (the id and the clock read last)."""
    if user_id is not None:
        check_user_id(user_id)
    if client_id is not None:
        check_client_id(client_id)
    timeout_s = timeout_seconds(settings, timeout_minutes)
    check_session_type(session_type)
    limit = settings.max_data_bytes
    blob, meta = encode_data(data, limit), encode_data(metadata, limit, "session metadata")
    if len(blob) + len(meta) > limit:
        raise SessionDataTooLargeError(len(blob) + len(meta), limit)
    now = clock()
    absolute_at = now + settings.absolute_timeout_seconds
    return SessionRecord(
        session_id=new_id(user_id, client_id),
        user_id=user_id,
        client_id=client_id,
        session_type=session_type,
        created_at=now,
        last_activity=now,
        timeout_s=timeout_s,
        absolute_at=absolute_at,
        blob=blob,
        meta=meta,
    )
