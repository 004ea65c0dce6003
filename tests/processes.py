"""Servers the tests start as processes: a free loopback port, waiting until one answers, stopping one."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_answer(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    """Until `url` answers 200; fails at once if `proc` exited, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        assert proc.poll() is None, f"{what} exited"
        assert time.monotonic() < deadline, f"{what} did not answer"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
