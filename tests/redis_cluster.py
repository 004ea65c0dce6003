"""A real local Redis Cluster (3 masters, 3 replicas) on free loopback ports, for the cluster tests.

Built as an operator would: six `redis-server --cluster-enabled yes`, then `redis-cli --cluster create
... --cluster-replicas 1`, then `wait_ready`: every node agrees that the running masters serve every slot
and every replica is in sync with its master. A failover only promotes a replica that has been talking
to its master, so a test kills a master only once the cluster is ready.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.redis_server import command as _command
from tests.support import require_tool

NODES = 6  # 3 masters, each with one replica
MASTERS = NODES // 2
SLOTS = 16384


def info(port: int, section: str = "replication") -> dict[str, str]:
    """INFO `section` of one node as a dict."""
    lines = _command(port, "INFO", section).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


@dataclass(frozen=True)
class Node:
    """One line of CLUSTER NODES: a node as the asking node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str  # "-" for a master
    slots: tuple[str, ...]  # "low-high" or "n"; "[n->-id]" / "[n-<-id]" while a slot migrates

    @property
    def slot_count(self) -> int:
        count = 0
        for span in self.slots:
            if not span.startswith("["):
                low, _, high = span.partition("-")
                count += int(high or low) - int(low) + 1
        return count


def cluster_nodes(port: int) -> list[Node]:
    """CLUSTER NODES as `port` sees the cluster."""
    nodes = []
    for line in _command(port, "CLUSTER", "NODES").splitlines():
        fields = line.split()
        port = int(fields[1].split("@")[0].rpartition(":")[2])
        nodes.append(Node(fields[0], port, frozenset(fields[2].split(",")), fields[3], tuple(fields[8:])))
    return nodes


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


class NodeExited(RuntimeError):
    """A redis-server exited while starting (most often: another process took its port meanwhile)."""


class RedisCluster:
    def __init__(self) -> None:
        self.binary = require_tool("redis-server", "redis-server")
        self.cli = require_tool("redis-cli", "redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="fm-cluster-"))
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:MASTERS])

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on `port`; back once that very process answers PING."""
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[port] = proc

        def serving() -> bool:
            if proc.poll() is not None:
                del self.procs[port]
                raise NodeExited(f"redis-server on {port} exited with {proc.returncode}")
            # Another engineer's server on the same port would answer PING too: check it is ours.
            return info(port, "server").get("process_id") == str(proc.pid) and _command(port, "PING") == "+PONG"

        self._wait(serving, f"node {port} did not start")

    def start(self) -> None:
        for _ in range(NODES):
            for attempt in range(5):
                port = _free_pair()
                try:
                    self.start_node(port)
                except NodeExited:
                    if attempt == 4:
                        raise
                    continue
                self.ports.append(port)
                break
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ready()

    def ready(self) -> bool:
        """Every running node serves: each says cluster_state:ok with every slot, all of them agree that
        the running masters (and only they) own the slots, nothing is failing or migrating, and every
        running replica's link to its master is up and has caught up with the master's offset. With all
        nodes running, each master has its replica."""
        running = set(self.procs)
        roles = {port: info(port) for port in running}
        masters = {port for port, rep in roles.items() if rep.get("role") == "master"}
        owners: set[tuple[int, tuple[str, ...]]] | None = None
        for port in running:
            state = _command(port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in state or f"cluster_slots_ok:{SLOTS}" not in state:
                return False
            view = [node for node in cluster_nodes(port) if node.port in running]
            if len(view) != len(running):
                return False  # a running node this one does not know (yet)
            if any(node.flags & {"fail", "fail?", "handshake", "noaddr"} for node in view):
                return False
            if any(span.startswith("[") for node in view for span in node.slots):
                return False
            seen = {(node.port, node.slots) for node in view if node.slot_count}
            if {p for p, _ in seen} != masters or sum(n.slot_count for n in view if n.slot_count) != SLOTS:
                return False  # a slot still owned by a dead master, or a master that owns nothing
            if owners is not None and seen != owners:
                return False  # the nodes do not agree yet
            owners = seen
        if len(masters) != MASTERS:
            return False
        replicas_of: dict[int, int] = {}
        for port in running - masters:
            rep = roles[port]
            master = int(rep.get("master_port", "0"))
            if rep.get("role") != "slave" or master not in masters:
                return False
            if rep.get("master_link_status") != "up" or rep.get("master_sync_in_progress") != "0":
                return False
            # The master's offset first: offsets only grow, so a replica at or past it has caught up.
            if int(info(port)["slave_repl_offset"]) < int(info(master)["master_repl_offset"]):
                return False
            replicas_of[master] = replicas_of.get(master, 0) + 1
        return len(running) < NODES or all(replicas_of.get(master) == 1 for master in masters)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until `ready` (polled, with a deadline)."""
        self._wait(self.ready, "the cluster did not become ready (slots served, replicas in sync)", timeout)

    def wait_master(self, port: int, timeout: float = 60.0) -> None:
        """Until `port` serves as a master (a replica promoted after its master failed), then `ready`."""
        self._wait(lambda: info(port).get("role") == "master", f"{port} was not promoted", timeout)
        self.wait_ready(timeout)

    def masters(self) -> list[int]:
        """Ports of the running masters."""
        return [port for port in self.procs if info(port).get("role") == "master"]

    def replica_of(self, master: int) -> int:
        for port in self.procs:
            rep = info(port)
            if port != master and rep.get("role") == "slave" and rep.get("master_port") == str(master):
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
    def _wait(ready: Callable[[], bool], message: str, timeout: float = 60.0) -> None:
        """Poll `ready` until it holds; a node that does not answer yet (OSError) counts as not ready. The
        deadline is for a machine busy with other work, where a node can take seconds to start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(message)
