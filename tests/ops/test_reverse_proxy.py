"""The documented deployment, for real: deploy/nginx.conf in front of `python -m faultmaven` (uvicorn).
Oversized headers are refused early, slow clients are cut off, and meanwhile other clients are served
without delay."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, stop, wait_for_answer
from tests.support import require_tool

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx.conf"
PROMPT = 1.0  # seconds: what "served without delay" allows, generously, on a busy machine
HEADER_TIMEOUT_S = 10  # client_header_timeout in deploy/nginx.conf


@pytest.fixture(scope="module")
def proxy() -> Iterator[int]:
    """uvicorn on a free loopback port, nginx with the shipped configuration in front: nginx's port."""
    nginx = require_tool("nginx", "nginx")
    app_port, proxy_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {"SESSION_CLEANUP_ENABLED": "false", "PYTHONPATH": str(ROOT)}
    app = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(app_port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with tempfile.TemporaryDirectory(prefix="fm-nginx-") as tmp:
        os.chmod(tmp, 0o777)  # nginx's workers (user nobody when run as root) write their temp files here
        text = CONF.read_text().replace("listen 8080;", f"listen 127.0.0.1:{proxy_port};")
        text = text.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};")
        conf = Path(tmp, "nginx.conf")
        conf.write_text(text)
        settings = f"daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;"
        proc = subprocess.Popen([nginx, "-p", tmp, "-c", str(conf), "-g", settings], stderr=subprocess.DEVNULL)
        try:
            wait_for_answer(f"http://127.0.0.1:{app_port}/health", app, "the service")
            wait_for_answer(f"http://127.0.0.1:{proxy_port}/health", proc, "nginx")
            yield proxy_port
        finally:
            stop(proc)
            stop(app)


class Prompt:
    """Another client's requests, one after the other, while something hostile runs: the slowest answer."""

    def __init__(self, port: int) -> None:
        self.port, self.slowest, self.answered = port, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                assert client.get("/health").status_code == 200
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.answered += 1
                time.sleep(0.02)

    def __enter__(self) -> Prompt:
        self._thread.start()
        self.wait_answers(1)  # the other client is being served before the hostile one starts
        return self

    def wait_answers(self, more: int) -> None:
        """Until `more` further answers came (however fast or slow the machine is)."""
        target, deadline = self.answered + more, time.monotonic() + 30
        while self.answered < target:
            assert self._thread.is_alive(), "the other client's request failed"
            assert time.monotonic() < deadline, "the other client was not answered"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _status(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(match.group(1)) if match else 0


def test_a_64_mib_header_is_refused_early_while_others_are_served(proxy: int) -> None:
    chunk = b"a" * (1024 * 1024)
    with Prompt(proxy) as other, socket.create_connection(("127.0.0.1", proxy), timeout=10) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):  # nginx answers 400 after 16 KiB, then drains or resets the rest
            for _ in range(64):
                conn.sendall(chunk)
        other.wait_answers(2)  # served while the hostile connection is still open
        reply = b""
        with contextlib.suppress(OSError):
            reply = conn.recv(4096)
    assert _status(reply) in (400, 431), reply[:200]
    assert other.answered > 0 and other.slowest < PROMPT, (other.answered, other.slowest)


def test_headers_over_16_kib_in_total_are_refused(proxy: int) -> None:
    headers = {f"X-Pad-{i}": "p" * 4000 for i in range(5)}  # 5 lines of 4 KB: each fits, the total does not
    assert httpx.get(f"http://127.0.0.1:{proxy}/health", headers=headers).status_code in (400, 431)
    fits = {f"X-Pad-{i}": "p" * 4000 for i in range(2)}
    assert httpx.get(f"http://127.0.0.1:{proxy}/health", headers=fits).status_code == 200


def test_a_slow_header_is_cut_off_while_others_are_served(proxy: int) -> None:
    """One byte of header every second: nginx ends it once the header timeout has passed."""
    with Prompt(proxy) as other, socket.create_connection(("127.0.0.1", proxy), timeout=5) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < HEADER_TIMEOUT_S + 10:
            try:
                conn.sendall(b"s")
                conn.settimeout(1.0)
                if conn.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        held = time.monotonic() - started
    assert closed, "the slow client was never cut off"
    assert held < HEADER_TIMEOUT_S + 5, held
    assert other.answered > 0 and other.slowest < PROMPT, (other.answered, other.slowest)


def test_a_slow_body_never_reaches_the_service(proxy: int) -> None:
    """A declared body sent one byte a second: nginx holds it and ends it after the body timeout."""
    with Prompt(proxy) as other, socket.create_connection(("127.0.0.1", proxy), timeout=5) as conn:
        head = b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        conn.sendall(head + b"Content-Length: 100000\r\n\r\n{")
        started, reply = time.monotonic(), b""
        conn.settimeout(HEADER_TIMEOUT_S + 10)
        with contextlib.suppress(OSError):
            reply = conn.recv(4096)  # nothing is sent after the first byte: the body read times out
        held = time.monotonic() - started
    assert reply == b"" or _status(reply) == 408, reply[:200]
    assert held < HEADER_TIMEOUT_S + 5, held
    assert other.answered > 0 and other.slowest < PROMPT, (other.answered, other.slowest)
