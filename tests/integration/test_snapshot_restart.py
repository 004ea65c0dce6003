"""A restart logs nobody out: a real `python -m faultmaven` with SESSION_SNAPSHOT_PATH, stopped with
SIGTERM and started again, serves every session as it was; after `kill -9`, what changed since the last
periodic snapshot is lost, and nothing else."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1/sessions"
CLIENT = "5f0c6a2e-1111-4a6b-9c1d-0123456789ab"


@contextlib.contextmanager
def served(snapshot: Path, interval_s: float = 0) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {"PYTHONPATH": str(ROOT), "SESSION_SNAPSHOT_PATH": str(snapshot), "SESSION_CLEANUP_ENABLED": "false"}
    env |= {"SESSION_SNAPSHOT_INTERVAL_SECONDS": str(interval_s)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health").status_code == 200:
                    break
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield client, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: uvicorn shuts down gracefully (the lifespan's end), then exits by the same signal."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_sigterm_then_start_keeps_every_live_session(tmp_path: Path) -> None:
    snapshot = tmp_path / "sessions.snapshot"
    with served(snapshot) as (client, proc):
        copilot = client.post(API, json={"client_id": CLIENT, "user_id": "alice", "timeout_minutes": 180}).json()
        plain = client.post(API, json={"user_id": "alice", "data": {"step": 1}, "metadata": {"tab": 2}}).json()
        short = client.post(API, json={"user_id": "bob", "timeout_minutes": 1}).json()
        anonymous = client.post(API, json={"session_type": "chat"}).json()
        for step in (2, 3):
            assert client.patch(f"{API}/{plain['session_id']}", json={"data": {"step": step}}).status_code == 200
        ids = [s["session_id"] for s in (copilot, plain, short, anonymous)]
        before = {sid: client.get(f"{API}/{sid}") for sid in ids}
        stop(proc)
    assert snapshot.exists() and snapshot.stat().st_mode & 0o777 == 0o600
    with served(snapshot) as (client, proc):
        for sid, old in before.items():
            new = client.get(f"{API}/{sid}")
            assert new.status_code == 200 and new.headers["ETag"] == old.headers["ETag"]
            same = ("user_id", "client_id", "session_type", "data", "metadata", "created_at", "timeout_minutes")
            assert {k: new.json()[k] for k in same} == {k: old.json()[k] for k in same}
        resumed = client.post(API, json={"client_id": CLIENT, "user_id": "alice"})
        assert resumed.status_code == 200 and resumed.json()["session_id"] == copilot["session_id"]
        stop(proc)


def test_kill_9_loses_only_what_changed_since_the_last_periodic_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "sessions.snapshot"
    with served(snapshot, interval_s=0.2) as (client, proc):
        kept = client.post(API, json={"data": {"k": 1}}).json()["session_id"]
        deadline = time.monotonic() + 30
        while not snapshot.exists():  # the first periodic snapshot holds it
            assert time.monotonic() < deadline, "no periodic snapshot was written"
            time.sleep(0.05)
        written = snapshot.stat().st_mtime_ns
        while snapshot.stat().st_mtime_ns == written:  # and one more, after the session surely existed
            assert time.monotonic() < deadline, "no second periodic snapshot"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with served(snapshot) as (client, proc):
        assert client.get(f"{API}/{kept}").status_code == 200
        stop(proc)


def test_without_a_snapshot_path_nothing_is_written(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(port)], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.post(f"http://127.0.0.1:{port}{API}").status_code == 201:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.iterdir()) == []
