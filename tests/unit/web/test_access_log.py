"""The access log's lean formatter writes what the general JSON formatter writes; its handler writes on a
thread and loses nothing queued when closed; the middleware logs the route template, never the path."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from pythonjsonlogger.json import JsonFormatter

from faultmaven.observability.logging import _FORMAT, _RENAME, AccessFormatter, BackgroundStderrHandler
from faultmaven.web.access_log import AccessLogMiddleware, access_log, log_request


@contextmanager
def _access_log_at(level: int) -> Iterator[io.StringIO]:
    """The access log written to a string at `level`, set back with setLevel (which also clears the
    logger's isEnabledFor cache; assigning `.level` would leave it answering for the old level)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AccessFormatter())
    old_level, old_propagate = access_log.level, access_log.propagate
    access_log.addHandler(handler)
    access_log.setLevel(level)
    access_log.propagate = False
    try:
        yield stream
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(old_level)
        access_log.propagate = old_propagate


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("faultmaven.access", logging.INFO, "", 0, "request", None, None)
    record.__dict__.update(fields)
    return record


def test_access_formatter_writes_the_json_formatters_line() -> None:
    general = JsonFormatter(_FORMAT, rename_fields=_RENAME)
    lean = AccessFormatter()
    fields = {"method": "GET", "route": '/api/v1/sessions/{session_id} "x"', "status": 404, "duration_ms": 0.125}
    record = _record(**fields)
    assert lean.format(record) == general.format(record)
    for created in (1_700_000_000.005, 1_700_000_000.05, 1_700_000_001.5):  # milliseconds padded to 3 digits
        timed = _record(**fields, created=created, msecs=float(int((created - int(created)) * 1000)))
        assert lean.format(timed) == general.format(timed)
    line = json.loads(lean.format(record))
    assert list(line) == ["time", "level", "logger", "message", "method", "route", "status", "duration_ms"]
    assert line["route"] == fields["route"] and line["status"] == 404 and line["duration_ms"] == 0.125


def test_access_formatter_formats_other_records_the_general_way() -> None:
    general = JsonFormatter(_FORMAT, rename_fields=_RENAME)
    for record in (_record(), _record(method="GET", route="/x", status="200", duration_ms=1.0)):
        assert AccessFormatter().format(record) == general.format(record)


def test_background_handler_writes_every_queued_record_by_close() -> None:
    handler = BackgroundStderrHandler()
    stream = io.StringIO()
    handler.target.setStream(stream)
    handler.setFormatter(AccessFormatter())
    for i in range(500):
        handler.handle(_record(method="GET", route="/r", status=200, duration_ms=float(i)))
    handler.close()
    handler.close()  # idempotent: dictConfig and atexit both close it
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["duration_ms"] for line in lines] == [float(i) for i in range(500)]


async def test_middleware_logs_the_route_template_and_no_id() -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(AccessLogMiddleware)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"ok": "yes"}

    with _access_log_at(logging.INFO) as stream:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            started = time.perf_counter()
            assert (await client.get("/items/secret-id-123")).status_code == 200
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            assert (await client.get("/nowhere/secret-id-456")).status_code == 404
    text = stream.getvalue()
    assert "secret-id" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert (first["method"], first["route"], first["status"]) == ("GET", "/items/{item_id}", 200)
    assert 0 <= first["duration_ms"] <= elapsed_ms
    assert (second["route"], second["status"]) == ("<unmatched>", 404)


def test_log_request_writes_nothing_below_info() -> None:
    with _access_log_at(logging.WARNING) as stream:
        log_request("GET", "/r", 200, 1.0)
    assert stream.getvalue() == ""
