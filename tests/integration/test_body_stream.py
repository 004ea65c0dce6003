"""The body limit counts bytes as they arrive: chunked bodies and bodies longer than their Content-Length
are refused (413) once past the limit, without being read in full, and change nothing."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from faultmaven.config import Settings
from faultmaven.main import create_app
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.web.body_limit import MAX_BODY_BYTES, BodyLimitMiddleware
from tests.support import FakeClock

API = "/api/v1/sessions"
MIB = 1024 * 1024
BODY_BYTES = 64 * MIB
IN_FLIGHT = 10
CHUNK = 64 * 1024
# A whole body that is valid JSON with a small update: only the limit can refuse it, and a prefix of it cut
# at any point past the object is valid JSON too, so a route handed a truncated body would apply it.
UPDATE = b'{"data": {"changed": true}}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def server() -> Iterator[tuple[str, int, int]]:
    """The real serve command under uvicorn: (host, port, pid)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {"SESSION_CLEANUP_ENABLED": "false", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield "127.0.0.1", port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _chunked_patch(host: str, port: int, sid: str, start: threading.Barrier) -> tuple[int, int]:
    """PATCH a BODY_BYTES chunked body, stopping once the server answers; (status, bytes sent)."""
    head = (
        f"PATCH {API}/{sid} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    padding = b" " * CHUNK
    sent = 0
    with socket.create_connection((host, port), timeout=30) as sock:
        start.wait(timeout=30)
        try:
            sock.sendall(head + b"%x\r\n%s\r\n" % (len(UPDATE), UPDATE))
            sent = len(UPDATE)
            while sent < BODY_BYTES and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (CHUNK, padding))
                sent += CHUNK
            if sent >= BODY_BYTES:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed while the body was still coming: its answer is read below
        answer = b""
        while b"\r\n" not in answer:
            part = sock.recv(4096)
            if not part:
                break
            answer += part
    status_line = answer.partition(b"\r\n")[0].split()
    return (int(status_line[1]) if len(status_line) > 1 else 0), sent


def test_concurrent_chunked_bodies_are_refused_as_they_stream(server: tuple[str, int, int]) -> None:
    host, port, pid = server
    base = f"http://{host}:{port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        sid = client.post(API, json={"data": {"keep": 1}}).json()["session_id"]
        assert client.patch(f"{API}/{sid}", json={"data": {"keep": 1}}).status_code == 200  # warm the path
        before = _peak_rss(pid)
        start = threading.Barrier(IN_FLIGHT)
        results: list[tuple[int, int]] = []
        errors: list[BaseException] = []

        def one() -> None:
            try:
                results.append(_chunked_patch(host, port, sid, start))
            except BaseException as exc:  # reported below, with the thread's result missing
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        grown = _peak_rss(pid) - before
        assert not errors, errors
        assert grown < MAX_BODY_BYTES * IN_FLIGHT + 16 * MIB, f"peak RSS grew by {grown / MIB:.0f} MiB; {results}"
        assert [status for status, _ in results] == [413] * IN_FLIGHT, results
        assert all(sent < BODY_BYTES for _, sent in results), "a client sent its whole body before any answer"
        assert client.get(f"{API}/{sid}").json()["data"] == {"keep": 1}
        assert client.get("/health").status_code == 200


async def _call(app: Any, scope: Scope, receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _scope(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "app": app,
        "state": {},
    }


class _Body:
    """An ASGI receive that hands over UPDATE, then padding up to 4 limits in all, counting what was taken."""

    def __init__(self) -> None:
        self.taken = 0

    async def __call__(self) -> Message:
        if self.taken >= 4 * MAX_BODY_BYTES:
            return {"type": "http.disconnect"}
        chunk = UPDATE if self.taken == 0 else b" " * CHUNK
        self.taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": self.taken < 4 * MAX_BODY_BYTES}


async def test_body_longer_than_its_content_length_is_refused_unread(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)
    app = create_app(manager=manager)
    sid = (await manager.create_session(data={"keep": 1})).session_id
    body = _Body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(UPDATE)).encode())]
    sent = await _call(app, _scope(app, "PATCH", f"{API}/{sid}", headers), body)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]
    assert json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))["detail"]
    assert body.taken <= MAX_BODY_BYTES + CHUNK, "the body was read past the limit"
    session = await manager.get_session(sid)
    assert session is not None and session.data == {"keep": 1}


async def test_a_body_past_the_limit_after_the_response_started_ends_the_request() -> None:
    """No 413 can follow a started response: the app's read fails, so the server closes the connection
    instead of ending the response as if it were whole."""
    seen: list[bytes] = []

    async def streams_first(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        more = True
        while more:
            message = await receive()
            seen.append(message.get("body", b""))
            more = message.get("more_body", False)

    host = SimpleNamespace(state=SimpleNamespace())  # an app without a session manager: the default limit
    middleware = BodyLimitMiddleware(streams_first)
    body = _Body()
    with pytest.raises(Exception) as raised:
        await _call(middleware, _scope(host, "POST", API, []), body)
    assert getattr(raised.value, "status_code", None) == 413
    assert sum(map(len, seen)) <= MAX_BODY_BYTES, "the app was handed bytes past the limit"
    assert body.taken <= MAX_BODY_BYTES + CHUNK
