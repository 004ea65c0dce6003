"""Structured logs: the cleanup record's fields, and no session id or data value in any line."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from tests.conftest import open_client
from tests.support import FakeClock, PoisonStore

API = "/api/v1/sessions"
SECRET = "hunter2-data-value"


async def test_no_session_id_or_data_in_any_log_line(json_log: io.StringIO, clock: FakeClock) -> None:
    store = PoisonStore()
    settings = Settings(cleanup_batch_size=3, cleanup_enabled=True, cleanup_interval_minutes=0.0005)
    manager = SessionManager(store, settings=settings, clock=clock)
    ids: list[str] = []
    async for client in open_client(manager):
        for i in range(10):
            response = await client.post(API, json={"user_id": f"user-{i}", "data": {"secret": f"{SECRET}-{i}"}})
            ids.append(response.json()["session_id"])
        for sid in ids:
            await client.get(f"{API}/{sid}")
            await client.post(f"{API}/{sid}/heartbeat")
            await client.patch(f"{API}/{sid}", json={"data": {"secret": f"{SECRET}-patched"}})
        await client.delete(f"{API}/{ids[0]}")
        await client.get(f"{API}/{ids[0]}")  # a 404 on a real id
        store.poison = {ids[1]}  # a per-session failure gets logged too
        clock.advance(minutes=31)
        async with asyncio.timeout(60):  # the scheduler's next run, every 30 ms: room for a loaded machine
            while manager.get_session_metrics()["sessions_cleaned_total"] < 8:
                await asyncio.sleep(0.01)

    text = json_log.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    assert records, "nothing was logged"
    for sid in ids:
        assert sid not in text
    assert SECRET not in text

    access = [r for r in records if r["logger"] == "faultmaven.access"]
    assert {r["route"] for r in access} >= {API, f"{API}/{{session_id}}", f"{API}/{{session_id}}/heartbeat"}

    completed = [r for r in records if r["message"] == "Session cleanup completed"]
    assert completed
    run = next(r for r in completed if r["cleanup_count"] > 0)
    for field in ("cleanup_count", "duration_ms", "memory_freed_mb", "errors_encountered"):
        assert field in run
    assert run["errors_encountered"] == 1 and run["memory_freed_mb"] > 0
    assert run["audit"]["trigger"] == "scheduled"
    assert run["audit"]["run_id"] and run["audit"]["node"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TIMEOUT_S = 0.3  # of real time: the served process's sessions expire while the test waits


def test_served_process_logs_json_without_ids(tmp_path: Path) -> None:
    """The real serve command under uvicorn: JSON lines and an audit file, cleanup runs, no id or data in
    either, and SIGTERM stops it with the scheduler stopped, well inside the scheduler's 30 s grace."""
    port = _free_port()
    audit_file = tmp_path / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {
        "SESSION_TIMEOUT_MINUTES": str(TIMEOUT_S / 60),
        "SESSION_MIN_TIMEOUT_MINUTES": "0.001",
        "SESSION_CLEANUP_INTERVAL_MINUTES": "0.003",
        "SESSION_AUDIT_LOG_PATH": str(audit_file),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(port), "--log-level", "debug"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    ids = []
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=5) as client:
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
            for i in range(20):
                sent = time.monotonic()
                sid = client.post(API, json={"data": {"secret": f"{SECRET}-{i}"}}).json()["session_id"]
                ids.append(sid)
                status = client.get(f"{API}/{sid}").status_code
                # Found, unless the machine took the whole timeout between the create and the read.
                assert status == 200 or (status == 404 and time.monotonic() - sent >= TIMEOUT_S), status
            deadline = time.monotonic() + 60
            while client.get(f"{API}/metrics").json()["sessions_cleaned_total"] < 20:
                assert time.monotonic() < deadline, "cleanup did not remove the sessions"
                time.sleep(0.1)
            assert client.get(f"{API}/{ids[0]}").status_code == 404
        proc.send_signal(signal.SIGTERM)
        # A stop that waited for the scheduler's 30 s grace (a run that never saw the stop) fails here.
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    text = proc.stderr.read()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(r["message"] == "Session cleanup completed" and r["cleanup_count"] > 0 for r in records)
    assert any(r.get("route") == f"{API}/{{session_id}}" for r in records)
    for sid in ids:
        assert sid not in text
    assert SECRET not in text
    # uvicorn re-raises SIGTERM after a clean shutdown, so the status is -15; the lifespan ran to its end.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert any(r["message"] == "Application shutdown complete." for r in records)
    assert any(r["message"] == "Session cleanup scheduler stopped" for r in records)
    audit_text = audit_file.read_text()
    audits = [json.loads(line) for line in audit_text.splitlines()]
    assert audits and all(a["message"] == "cleanup run" and a["logger"] == "faultmaven.audit" for a in audits)
    for field in ("run_id", "trigger", "node", "started_at", "finished_at", "cleanup_count", "errors", "outcome"):
        assert all(field in a for a in audits), field
    assert sum(a["cleanup_count"] for a in audits) >= 20
    for sid in ids:
        assert sid not in audit_text
    assert SECRET not in audit_text
