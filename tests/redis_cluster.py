"""A real local Redis Cluster (3 masters, 3 replicas) on free loopback ports, for the cluster tests.

Built as an operator would: six `redis-server --cluster-enabled yes`, then `redis-cli --cluster create
... --cluster-replicas 1`, then wait until every node reports cluster_state:ok.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import require_tool

NODES = 6  # 3 masters, each with one replica


def _command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command over a raw socket (RESP inline), the reply as text: no client library involved."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            data += conn.recv(65536)
        header, _, body = data.partition(b"\r\n")
        if not header.startswith(b"$") or header == b"$-1":
            return header.decode()
        size = int(header[1:])
        while len(body) < size + 2:
            body += conn.recv(65536)
        return body[:size].decode(errors="replace")


def _free_pair() -> int:
    """A free port whose cluster bus port (port + 10000) is free as well, so both fit under 65536."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 45_000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


class RedisCluster:
    def __init__(self) -> None:
        self.binary = require_tool("redis-server", "redis-server")
        self.cli = require_tool("redis-cli", "redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="fm-cluster-"))
        self.ports = [_free_pair() for _ in range(NODES)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:3])

    def start_node(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: _command(port, "PING").startswith("+PONG"), f"node {port} did not start")

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every running node says cluster_state:ok and knows every slot."""

        def ok() -> bool:
            for port in self.procs:
                info = _command(port, "CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
            return True

        self._wait(ok, "the cluster did not reach cluster_state:ok", timeout)

    def wait_master(self, port: int, timeout: float = 30.0) -> None:
        """Until `port` serves as a master (a replica promoted after its master failed), then every slot."""
        self._wait(lambda: "role:master" in _command(port, "INFO", "replication"), f"{port} was not promoted", timeout)
        self.wait_ok(timeout)

    def masters(self) -> list[int]:
        """Ports of the running masters."""
        return [port for port in self.procs if "role:master" in _command(port, "INFO", "replication")]

    def replica_of(self, master: int) -> int:
        for port in self.procs:
            if port != master and f"master_port:{master}" in _command(port, "INFO", "replication"):
                return port
        raise LookupError(f"no replica of {master}")

    def dbsize(self, port: int) -> int:
        return int(_command(port, "DBSIZE")[1:])

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def flush(self) -> None:
        for port in self.masters():
            _command(port, "FLUSHALL")

    def cleanup(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _wait(ready: object, message: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():  # type: ignore[operator]
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(message)
