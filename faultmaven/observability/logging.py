"""JSON-lines logging through the standard `logging` module (python-json-logger's formatter).

Nothing here writes a session id: the access log records the route template, never the raw path.
The access log (one record per request) has its own formatter, which writes the same JSON object as the
general one at a fraction of its cost, and its own handler, which hands records to a thread that formats
and writes them in batches, so the event loop never waits on stderr.
"""

from __future__ import annotations

import atexit
import json
import logging.config
import logging.handlers
import queue
import re
import sys
import time
from functools import lru_cache
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}
_ACCESS_FIELDS = ("method", "route", "status", "duration_ms")


@lru_cache(maxsize=256)
def _quoted(text: str) -> str:
    """A string as a JSON literal; the access log's strings come from a few methods and route templates."""
    return json.dumps(text)


class AccessFormatter(JsonFormatter):
    """The JSON formatter's object for an access record (time, level, logger, message, method, route,
    status, duration_ms), built from those fields alone; any other record goes the general way.

    The time's seconds are formatted once per second (time.strftime dominates a record otherwise).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(_FORMAT, rename_fields=_RENAME)
        self._second = -1
        self._second_text = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        try:
            method, route, status, duration = (fields[name] for name in _ACCESS_FIELDS)
        except KeyError:
            return super().format(record)
        plain = type(method) is str and type(route) is str and type(status) is int and type(duration) is float
        if record.exc_info or record.args or not plain:
            return super().format(record)
        return (
            f'{{"time": "{self._time(record)}", "level": {_quoted(record.levelname)}, '
            f'"logger": {_quoted(record.name)}, "message": {_quoted(str(record.msg))}, '
            f'"method": {_quoted(method)}, "route": {_quoted(route)}, '
            f'"status": {status}, "duration_ms": {duration!r}}}'
        )


class BatchingListener(logging.handlers.QueueListener):
    """A QueueListener that wakes once per batch: after a record arrives it waits LINGER_S, then formats
    every record queued by then and writes them to its one StreamHandler in a single write and flush.

    One wake-up and one write per batch instead of per record: the thread takes the GIL from the event
    loop a few dozen times a second under load, not once per request.
    """

    LINGER_S = 0.01

    def __init__(self, records: queue.SimpleQueue[Any], target: logging.StreamHandler[Any]) -> None:
        super().__init__(records, target)
        self.records, self.target = records, target

    def _monitor(self) -> None:
        records, sentinel = self.records, None  # stop() queues None (QueueListener's sentinel)
        while True:
            batch = [records.get()]
            if batch[0] is not sentinel:
                time.sleep(self.LINGER_S)
            while True:
                try:
                    batch.append(records.get_nowait())
                except queue.Empty:
                    break
            stopping = any(record is sentinel for record in batch)
            self.write([record for record in batch if record is not sentinel])
            if stopping:
                return

    def write(self, batch: list[logging.LogRecord]) -> None:
        """Formats each record through the target's filters and formatter; one write for all."""
        target, lines = self.target, []
        for record in batch:
            try:
                if target.filter(record):
                    lines.append(target.format(record) + target.terminator)
            except Exception:
                target.handleError(record)
        if not lines:
            return
        with target.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                target.stream.write("".join(lines))
                target.flush()
            except Exception:
                target.handleError(batch[-1])


class BackgroundStderrHandler(logging.handlers.QueueHandler):
    """Puts each record on a queue that a BatchingListener thread formats and writes to stderr.

    The record is queued as it is (the standard prepare() formats and copies it on the caller's thread):
    records of the access log are built per request and never changed after.
    """

    def __init__(self) -> None:
        super().__init__(queue.SimpleQueue())
        self.target = logging.StreamHandler(sys.stderr)
        self.listener = BatchingListener(self.queue, self.target)  # type: ignore[arg-type]
        self.listener.start()
        atexit.register(self.close)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        self.target.setFormatter(fmt)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def close(self) -> None:
        """Writes what is queued, then stops the thread (idempotent: dictConfig and atexit both call it)."""
        if self.listener._thread is not None:
            self.listener.stop()
        self.target.flush()
        super().close()


_SESSION_IN_PATH = re.compile(r"(/sessions/)[A-Za-z0-9_-]{43,}")


class RedactSessionIds(logging.Filter):
    """Writes `{session_id}` for anything shaped like a session id after /sessions/ in a record's
    arguments: uvicorn's access log formats the raw request path into its line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SESSION_IN_PATH.sub(r"\1{session_id}", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def redact_uvicorn_access_log() -> None:
    """Whoever configured logging, uvicorn's access log never shows a session id (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSessionIds) for f in access.filters):
        access.addFilter(RedactSessionIds())


def configure_embedded(audit_path: str | None, *, uvicorn_access: bool) -> None:
    """The served logging for an app some other command started (`uvicorn faultmaven.main:app`, a host
    app with `install()`): JSON lines for the service's records, the audit file if set. Left alone when
    logging was configured already: the service's loggers (the CLI does it before the app starts) or the
    root logger (a host that owns its logging, a test runner) have handlers."""
    redact_uvicorn_access_log()
    if logging.getLogger("faultmaven").handlers or logging.getLogger().handlers:
        return
    level = logging.getLevelName(logging.getLogger("uvicorn").getEffectiveLevel()).lower()
    level = level if level in ("critical", "error", "warning", "info", "debug") else "info"
    logging.config.dictConfig(logging_config(level, audit_path, uvicorn_access))
    redact_uvicorn_access_log()


def logging_config(level: str = "info", audit_path: str | None = None, uvicorn_access: bool = False) -> dict[str, Any]:
    """A dictConfig for our loggers and uvicorn's, every line one JSON object on stderr.

    With `audit_path`, the audit records (faultmaven.audit, one per cleanup or eviction run) also go to
    that JSON-lines file. uvicorn's access log stays off unless `uvicorn_access` (a host app's own routes
    have no other access log); it then writes JSON lines too, with session ids redacted.
    """
    level = level.upper()
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": _FORMAT, "rename_fields": _RENAME},
            "access": {"()": "faultmaven.observability.logging.AccessFormatter"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            # One record per request: formatted and written on a thread, the event loop only queues it.
            "access": {"()": "faultmaven.observability.logging.BackgroundStderrHandler", "formatter": "access"},
        },
        "loggers": {
            "faultmaven": {"handlers": ["stderr"], "level": level, "propagate": False},
            "faultmaven.access": {"handlers": ["access"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            # uvicorn's access log writes raw paths (session ids): off, see faultmaven.access; or redacted.
            "uvicorn.access": (
                {"handlers": ["stderr"], "level": level, "propagate": False}
                if uvicorn_access
                else {"handlers": [], "level": "CRITICAL", "propagate": False}
            ),
        },
    }
    if audit_path:
        config["handlers"]["audit_file"] = {"class": "logging.FileHandler", "formatter": "json", "filename": audit_path}
        config["loggers"]["faultmaven.audit"] = {
            "handlers": ["stderr", "audit_file"],
            "level": "INFO",
            "propagate": False,
        }
    return config


def configure_logging(level: str = "info", audit_path: str | None = None) -> None:
    logging.config.dictConfig(logging_config(level, audit_path))
