"""Audit records: one per cleanup or eviction run, one per call that ended sessions by deletion,
revocation, rotation or the per-user limit, one per admin action (with its actor), and rate-limited
records of refused credentials. Users and sources appear as keyed fingerprints, never as raw ids, and no
credential is ever written.

The service log carries the run's summary ("Session cleanup completed" with its counts and the audit
fields nested); the dedicated `faultmaven.audit` logger gets the same run (SESSION_AUDIT_LOG_PATH adds a
file for it).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faultmaven.session import fingerprint

log = logging.getLogger("faultmaven.sessions")
audit_log = logging.getLogger("faultmaven.audit")

NODE = f"{socket.gethostname()}:{os.getpid()}"
_MIB = 1024 * 1024


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """What one cleanup or eviction run did, for its log and audit records."""

    run_id: str
    trigger: str
    started_at: float
    finished_at: float
    removed: int
    duration_ms: float
    freed_bytes: int
    errors: int
    reason: str


_ID_LIKE = re.compile(r"[A-Za-z0-9_-]{43,}")  # anything shaped like a session id


def log_run(run: RunRecord, level: int = logging.INFO, error_type: str | None = None, error: str = "") -> None:
    """One record per run in the service log, and the same run in the audit log. A failed run's `error`
    says what failed and why in one line (for a store: its host:port and the cause), ids redacted."""
    audit: dict[str, Any] = {
        "run_id": run.run_id,
        "trigger": run.trigger,
        "node": NODE,
        "outcome": "failed" if error_type else "completed",
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }
    audit |= {"reason": run.reason, "cleanup_count": run.removed, "errors": run.errors}
    fields: dict[str, Any] = {
        "cleanup_count": run.removed,
        "duration_ms": round(run.duration_ms, 3),
        "memory_freed_mb": round(run.freed_bytes / _MIB, 6),
        "errors_encountered": run.errors,
        "audit": audit,
    }
    if error_type:
        fields["error_type"] = error_type
        fields["error"] = _ID_LIKE.sub("{session_id}", " ".join(error.split()))
    log.log(level, "Session cleanup failed" if error_type else "Session cleanup completed", extra=fields)
    audit_log.info("cleanup run", extra=audit | {"duration_ms": fields["duration_ms"], "error_type": error_type})


def audit_event(event: str, user_id: str | None, count: int, at: float) -> None:
    """A revocation, rotation or user-limit ending: who (as a fingerprint), how many, where and when."""
    audit_log.info(
        "session " + event,
        extra={
            "event": event,
            "user": fingerprint(user_id) if user_id is not None else None,
            "count": count,
            "node": NODE,
            "at": _iso(at),
        },
    )


def audit_refusal(kind: str, source: str, count: int, in_a_row: int) -> None:
    """Credentials refused: which kind, from which source (a fingerprint), how many since the last record
    of that source and in a row; never the credential."""
    audit_log.warning(
        "credential refused",
        extra={
            "event": "credential_refused",
            "kind": kind,
            "source": source,
            "count": count,
            "in_a_row": in_a_row,
            "node": NODE,
        },
    )


def audit_admin(action: str, source: str, count: int, at: float) -> None:
    """An admin route's action, with its actor (the fingerprint of the source that held the token)."""
    audit_log.info(
        "admin " + action,
        extra={"event": "admin_" + action, "actor": fingerprint(source), "count": count, "node": NODE, "at": _iso(at)},
    )
