"""A real local Redis Cluster (3 masters, 3 replicas) on free loopback ports, for the cluster tests.

Built as an operator would: six `redis-server --cluster-enabled yes`, then `redis-cli --cluster create
... --cluster-replicas 1`, then `wait_ready`: every node agrees that the running masters serve every slot
and every replica is in sync with its master. A failover only promotes a replica that has been talking
to its master, so a test kills a master only once the cluster is ready.

With `ClusterTLS` every node speaks TLS only (`--port 0 --tls-port ...`), on the cluster bus and to its
master too (`--tls-cluster yes --tls-replication yes`), and asks every client for a certificate of the
same CA (Redis' default `tls-auth-clients yes`); the helper's own commands and `redis-cli` then go over
TLS with the nodes' certificate as theirs.
"""

from __future__ import annotations

import functools
import random
import shutil
import socket
import ssl
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

Command = Callable[..., str]  # (port, *args) -> the reply as text, as tests.redis_server.command


@dataclass(frozen=True)
class ClusterTLS:
    """The files of a TLS cluster: every node's certificate and key (also its client certificate on the
    cluster bus and to its master), and the CA that signed them, which every node and client trusts."""

    cert: Path
    key: Path
    ca: Path

    def server_args(self) -> list[str]:
        files = ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca)]
        return [*files, "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "yes"]

    def cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.ca), "--cert", str(self.cert), "--key", str(self.key)]

    @functools.cached_property
    def context(self) -> ssl.SSLContext:
        """Verifies the node (CA and 127.0.0.1) and shows the node certificate as the client's."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def command(self, port: int, *args: str, timeout: float = 2.0) -> str:
        """tests.redis_server.command over TLS."""
        return _command(port, *args, timeout=timeout, tls=self.context)


def info(port: int, section: str = "replication", *, command: Command = _command) -> dict[str, str]:
    """INFO `section` of one node as a dict."""
    lines = command(port, "INFO", section).splitlines()
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


def cluster_nodes(port: int, *, command: Command = _command) -> list[Node]:
    """CLUSTER NODES as `port` sees the cluster."""
    nodes = []
    for line in command(port, "CLUSTER", "NODES").splitlines():
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
    def __init__(self, tls: ClusterTLS | None = None) -> None:
        """A plain-text cluster, or with `tls` one that speaks TLS only (clients, bus and replication)."""
        self.tls = tls
        self.binary = require_tool("redis-server", "redis-server")
        self.cli = require_tool("redis-cli", "redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="fm-cluster-"))
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """redis+cluster://, or rediss+cluster:// with TLS (the TLS options are the caller's to add)."""
        scheme = "redis+cluster" if self.tls is None else "rediss+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:MASTERS])

    @property
    def cli_args(self) -> list[str]:
        """redis-cli and the options that reach the nodes (TLS ones for a TLS cluster)."""
        return [self.cli, *([] if self.tls is None else self.tls.cli_args())]

    def command(self, port: int, *args: str) -> str:
        """One command to the node on `port` (over TLS for a TLS cluster), the reply as text."""
        return _command(port, *args) if self.tls is None else self.tls.command(port, *args)

    def info(self, port: int, section: str = "replication") -> dict[str, str]:
        return info(port, section, command=self.command)

    def cluster_nodes(self, port: int) -> list[Node]:
        return cluster_nodes(port, command=self.command)

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on `port`; back once that very process answers PING."""
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        if self.tls is None:
            args = [self.binary, "--port", str(port)]
        else:  # the cluster bus is then the TLS port + 10000, as it is the port + 10000 without TLS
            args = [self.binary, "--port", "0", "--tls-port", str(port), *self.tls.server_args()]
        args += ["--bind", "127.0.0.1", "--dir", str(node_dir)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[port] = proc

        def serving() -> bool:
            if proc.poll() is not None:
                del self.procs[port]
                raise NodeExited(f"redis-server on {port} exited with {proc.returncode}")
            # Another engineer's server on the same port would answer PING too: check it is ours.
            return (
                self.info(port, "server").get("process_id") == str(proc.pid) and self.command(port, "PING") == "+PONG"
            )

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
            [*self.cli_args, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
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
        roles = {port: self.info(port) for port in running}
        masters = {port for port, rep in roles.items() if rep.get("role") == "master"}
        owners: set[tuple[int, tuple[str, ...]]] | None = None
        for port in running:
            state = self.command(port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in state or f"cluster_slots_ok:{SLOTS}" not in state:
                return False
            view = [node for node in self.cluster_nodes(port) if node.port in running]
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
            if int(self.info(port)["slave_repl_offset"]) < int(self.info(master)["master_repl_offset"]):
                return False
            replicas_of[master] = replicas_of.get(master, 0) + 1
        return len(running) < NODES or all(replicas_of.get(master) == 1 for master in masters)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until `ready` (polled, with a deadline)."""
        self._wait(self.ready, "the cluster did not become ready (slots served, replicas in sync)", timeout)

    def wait_master(self, port: int, timeout: float = 60.0) -> None:
        """Until `port` serves as a master (a replica promoted after its master failed), then `ready`."""
        self._wait(lambda: self.info(port).get("role") == "master", f"{port} was not promoted", timeout)
        self.wait_ready(timeout)

    def masters(self) -> list[int]:
        """Ports of the running masters."""
        return [port for port in self.procs if self.info(port).get("role") == "master"]

    def replica_of(self, master: int) -> int:
        for port in self.procs:
            rep = self.info(port)
            if port != master and rep.get("role") == "slave" and rep.get("master_port") == str(master):
                return port
        raise LookupError(f"no replica of {master}")

    def dbsize(self, port: int) -> int:
        return int(self.command(port, "DBSIZE")[1:])

    def slot_owners(self) -> dict[int, int]:
        """slot -> port of the running master that serves it, as each master sees itself."""
        owners: dict[int, int] = {}
        for port in self.masters():
            (me,) = [node for node in self.cluster_nodes(port) if "myself" in node.flags]
            for span in me.slots:
                if not span.startswith("["):  # a slot being migrated or imported
                    low, _, high = span.partition("-")
                    owners.update(dict.fromkeys(range(int(low), int(high or low) + 1), port))
        return owners

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def flush(self) -> None:
        for port in self.masters():
            self.command(port, "FLUSHALL")

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
