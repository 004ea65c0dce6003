"""A real redis-server on a free loopback port, for the tests that need Redis.

Outside CI a missing redis-server skips those tests with a visible reason; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import require_tool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(port: int, *args: str, timeout: float = 2.0, tls: ssl.SSLContext | None = None) -> str:
    """One command over a raw socket (RESP inline; over TLS with `tls`), the reply as text: no client
    library involved. A status or error reply comes back as its line ("+PONG", "-LOADING ..."), a bulk
    reply as its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, _wrapped(raw, tls) as conn:
        conn.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            data += _receive(conn)
        header, _, body = data.partition(b"\r\n")
        if not header.startswith(b"$") or header == b"$-1":
            return header.decode()
        size = int(header[1:])
        while len(body) < size + 2:
            body += _receive(conn)
        return body[:size].decode(errors="replace")


def _wrapped(raw: socket.socket, tls: ssl.SSLContext | None) -> socket.socket:
    return raw if tls is None else tls.wrap_socket(raw, server_hostname="127.0.0.1")


def _receive(conn: socket.socket) -> bytes:
    """The next bytes of a reply; a server that closes the connection (killed, shutting down) is an
    error, not an endless wait for bytes that never come."""
    chunk = conn.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    return chunk


class RedisServer:
    """One redis-server process with an append-only file, so a stop and start keeps the data."""

    def __init__(self, *extra_args: str) -> None:
        self.extra_args = list(extra_args)  # e.g. "--maxmemory", "24mb"
        self.binary = require_tool("redis-server", "redis-server")
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fm-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server; back once this very process answers PING (not while it loads its append-only
        file, which answers -LOADING, and not another process that took the port)."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "no"]
        args += self.extra_args
        self.proc = proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server on {self.port} exited with {proc.returncode}")
            try:
                ours = f"process_id:{proc.pid}\r\n" in command(self.port, "INFO", "server")
                if ours and command(self.port, "PING") == "+PONG":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def flush(self) -> None:
        """Empty every database; back once the server has said OK."""
        reply = command(self.port, "FLUSHALL")
        if reply != "+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
