"""Redis over TLS: rediss:// against a real redis-server with --tls-port and a CA made here, and
rediss+cluster:// against a real local Redis Cluster that speaks TLS only (clients, bus, replication); a
wrong CA or a plain-text port fails with one clear line."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.crc import key_slot

from faultmaven.config import Settings
from faultmaven.exceptions import ConfigError, SessionStoreException
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.store import RedisStore
from tests.conftest import open_client
from tests.processes import free_port
from tests.redis_cluster import MASTERS, ClusterTLS, RedisCluster
from tests.redis_server import RedisServer
from tests.support import FakeClock


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(directory: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA, written as <name>.pem."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def make_server_cert(
    directory: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str = "server"
) -> None:
    """<name>.pem and <name>.key for 127.0.0.1 and localhost, signed by `ca` (a client may show it too)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(_key_pem(key))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a plain-text port and a TLS port (server certificate from a CA made here)."""
    directory = tmp_path_factory.mktemp("tls")
    ca, ca_key = make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_server_cert(directory, ca, ca_key)
    tls_port = free_port()
    server = RedisServer(
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(directory / "server.pem"),
        "--tls-key-file", str(directory / "server.key"),
        "--tls-ca-cert-file", str(directory / "ca.pem"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start()
    yield server, tls_port, directory
    server.cleanup()


async def test_sessions_work_over_tls(tls_redis: tuple[RedisServer, int, Path]) -> None:
    _, port, directory = tls_redis
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={directory / 'ca.pem'}"
    manager = SessionManager(settings=Settings(store_url=url, cleanup_enabled=False), clock=FakeClock())
    try:
        session = await manager.create_session("alice", {"k": "v"})
        assert (await manager.get_session(session.session_id, user_id="alice")) is not None
        await manager.refresh_store_stats()
        assert manager.get_session_metrics()["active_sessions"] == 1
    finally:
        await manager.close()


async def test_a_wrong_ca_fails_with_one_line_naming_the_certificate(tls_redis: tuple[RedisServer, int, Path]) -> None:
    _, port, directory = tls_redis
    store = RedisStore(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={directory / 'other-ca.pem'}")
    try:
        with pytest.raises(SessionStoreException) as raised:
            await store.refresh_stats(0.0)
        assert "\n" not in str(raised.value) and "certificate" in str(raised.value).lower(), str(raised.value)
    finally:
        await store.close()


async def test_tls_to_a_plain_text_port_fails_with_one_line(tls_redis: tuple[RedisServer, int, Path]) -> None:
    server, _, directory = tls_redis
    store = RedisStore(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={directory / 'ca.pem'}")
    try:
        with pytest.raises(SessionStoreException) as raised:
            await store.refresh_stats(0.0)
        assert "\n" not in str(raised.value), str(raised.value)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?ssl=true",
        "redis://127.0.0.1:6379/0?ssl_ca_certs=/ca.pem",
        "rediss://127.0.0.1:6379/0?ssl_cert_reqs=maybe",
        "rediss://127.0.0.1:6379/0?password=x",
        "rediss+cluster://127.0.0.1:7000?ssl_verify=no",
    ],
)
def test_tls_options_are_checked_at_start(url: str) -> None:
    with pytest.raises(ConfigError, match="SESSION_STORE_URL"):
        Settings(store_url=url)


def test_tls_urls_are_accepted() -> None:
    for url in ("rediss://h:6380/0?ssl_cert_reqs=none", "rediss+cluster://h:7000,h:7001?ssl_ca_certs=/ca.pem"):
        assert Settings(store_url=url).store_url == url


async def test_an_unreachable_store_is_named_at_start_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(store_url=f"redis://user:Pa55-w0rd@127.0.0.1:{port}/0", cleanup_enabled=False)
    manager = SessionManager(settings=settings, clock=FakeClock())
    try:
        with caplog.at_level(logging.WARNING, logger="faultmaven.sessions"):
            async for client in open_client(manager):
                health = (await client.get("/health")).json()
        assert health["services"]["session_manager"]["status"] == "unhealthy"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].getMessage() == "Session store unreachable at start"
        assert errors[0].store == f"redis://127.0.0.1:{port}"  # type: ignore[attr-defined]
        assert f"127.0.0.1:{port}" in errors[0].error and "\n" not in errors[0].error  # type: ignore[attr-defined]
        assert not [r for r in caplog.records if "INFO memory" in r.getMessage()]  # no misleading warning
        assert "Pa55-w0rd" not in " ".join(str(vars(r)) for r in caplog.records)
    finally:
        await manager.close()


async def test_a_failed_cleanup_names_the_store_and_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    manager = SessionManager(settings=Settings(store_url=f"redis://127.0.0.1:{port}/0", cleanup_enabled=False))
    try:
        with caplog.at_level(logging.ERROR, logger="faultmaven.sessions"), pytest.raises(SessionStoreException):
            await manager.cleanup_inactive_sessions()
        (failed,) = [r for r in caplog.records if r.getMessage() == "Session cleanup failed"]
        assert f"127.0.0.1:{port}" in failed.error and "\n" not in failed.error  # type: ignore[attr-defined]
    finally:
        await manager.close()


API = "/api/v1/sessions"
ADMIN = {"Authorization": "Bearer admin-secret-0123456789abcdef01234"}


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisCluster, Path]]:
    """A Redis Cluster (3 masters, 3 replicas) that speaks TLS only: to clients, on the cluster bus and to
    the replicas; every node asks clients for a certificate of the CA made here (client.pem)."""
    directory = tmp_path_factory.mktemp("tls-cluster")
    ca, ca_key = make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_server_cert(directory, ca, ca_key)  # every node's
    make_server_cert(directory, ca, ca_key, "client")  # the service's
    cluster = RedisCluster(
        ClusterTLS(cert=directory / "server.pem", key=directory / "server.key", ca=directory / "ca.pem")
    )
    try:
        cluster.start()
        yield cluster, directory
    finally:
        cluster.cleanup()


@pytest.fixture
def tls_cluster_ready(tls_cluster: tuple[RedisCluster, Path]) -> tuple[RedisCluster, Path]:
    """The TLS cluster flushed and ready: every slot served, every replica in sync."""
    cluster, _ = tls_cluster
    cluster.wait_ready()
    cluster.flush()
    return tls_cluster


def cluster_tls_url(cluster: RedisCluster, directory: Path, ca: str = "ca") -> str:
    """rediss+cluster:// to the masters, trusting `ca`.pem, with the service's client certificate."""
    options = f"ssl_ca_certs={directory / f'{ca}.pem'}&ssl_certfile={directory / 'client.pem'}"
    return f"{cluster.url}?{options}&ssl_keyfile={directory / 'client.key'}"


async def test_sessions_over_tls_to_a_cluster_from_create_to_cleanup_on_every_master(
    tls_cluster_ready: tuple[RedisCluster, Path], clock: FakeClock
) -> None:
    """The real app on rediss+cluster:// with the cluster's CA verified: create, read, heartbeat, update,
    delete and list a user's sessions; then a cleanup removes exactly the expired sessions, which lie on
    every master (checked on the masters themselves), and keeps every live one."""
    cluster, directory = tls_cluster_ready
    assert cluster.url.startswith("rediss+cluster://")
    settings = Settings(
        store_url=cluster_tls_url(cluster, directory),
        cleanup_enabled=False,
        user_header="X-User-ID",
        admin_token="admin-secret-0123456789abcdef01234",
        max_per_user=0,
    )
    manager = SessionManager(settings=settings, clock=clock)
    store = manager.store
    assert isinstance(store, RedisStore)
    owners = cluster.slot_owners()
    assert len(owners) == 16384 and len(set(owners.values())) == MASTERS

    def where(sid: str) -> tuple[int, str]:
        """The master that holds the session, and the session's key."""
        shard = store.shard_for(sid)
        assert shard is not None
        key = shard.key(sid)
        return owners[key_slot(key.encode())], key

    try:
        async for client in open_client(manager):
            # Sessions that will have expired by the cleanup: one per user, until every master holds some.
            old: dict[str, str] = {}  # session id -> user
            for n in range(300):
                old[await create(client, f"user-{n}")] = f"user-{n}"
                held = {where(sid)[0] for sid in old}
                if len(held) == MASTERS and n >= 2 * MASTERS:
                    break
            assert {where(sid)[0] for sid in old} == set(owners.values())
            clock.advance(minutes=20)

            alice = {"X-User-ID": "alice"}
            sid = await create(client, "alice", {"case": 1})
            got = await client.get(f"{API}/{sid}", headers=alice)
            assert got.status_code == 200 and got.json()["data"] == {"case": 1}
            clock.advance(60)
            beat = await client.post(f"{API}/{sid}/heartbeat", headers=alice)
            assert beat.status_code == 200 and beat.json()["last_activity"] > got.json()["last_activity"]
            patched = await client.patch(f"{API}/{sid}", json={"data": {"case": 2}}, headers=alice)
            assert patched.status_code == 200 and patched.json()["data"] == {"case": 2}
            assert (await client.get(f"{API}/{sid}", headers=alice)).json()["data"] == {"case": 2}
            others = [await create(client, "alice") for _ in range(2)]
            listed = (await client.get(API, headers=alice)).json()
            assert listed["total"] == 3 and {s["session_id"] for s in listed["sessions"]} == {sid, *others}
            assert (await client.delete(f"{API}/{others[0]}", headers=alice)).status_code == 204
            assert (await client.get(f"{API}/{others[0]}", headers=alice)).status_code == 404
            listed = (await client.get(API, headers=alice)).json()
            assert {s["session_id"] for s in listed["sessions"]} == {sid, others[1]}

            # Live sessions of the same users, so in the same shards as the expired ones.
            live = {sid: "alice", others[1]: "alice"}  # session id -> user
            for user in old.values():
                live[await create(client, user)] = user
            assert {where(s)[0] for s in live} == set(owners.values())
            clock.advance(minutes=15)  # the first ones are 35 minutes idle (timeout 30), the live ones 15
            for expired in old:
                port, key = where(expired)
                assert cluster.command(port, "EXISTS", key) == ":1"  # still stored until the cleanup
            cleaned = await client.post(f"{API}/cleanup", headers=ADMIN)
            assert cleaned.status_code == 200 and cleaned.json()["cleaned"] == len(old), cleaned.text
            for expired in old:
                port, key = where(expired)
                assert cluster.command(port, "EXISTS", key) == ":0"  # gone from the master that held it
            for kept, user in live.items():
                port, key = where(kept)
                assert cluster.command(port, "EXISTS", key) == ":1"
                assert (await client.get(f"{API}/{kept}", headers={"X-User-ID": user})).status_code == 200
            await manager.refresh_store_stats()
            assert manager.get_session_metrics()["active_sessions"] == len(live)
    finally:
        await manager.close()


async def create(client: httpx.AsyncClient, user: str, data: dict[str, int] | None = None) -> str:
    answer = await client.post(API, json={"data": data or {}}, headers={"X-User-ID": user})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["session_id"])


async def test_a_client_that_does_not_trust_the_cluster_ca_is_refused_naming_tls(
    tls_cluster_ready: tuple[RedisCluster, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Certificates are verified on a cluster too: trusting another CA, the service (with a client
    certificate the nodes accept) is refused; it serves anyway, /health says unhealthy, and the one
    start-up error line names the cluster's nodes and the TLS failure."""
    cluster, directory = tls_cluster_ready
    manager = SessionManager(
        settings=Settings(store_url=cluster_tls_url(cluster, directory, ca="other-ca"), cleanup_enabled=False),
        clock=FakeClock(),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="faultmaven.sessions"):
            async for client in open_client(manager):
                health = (await client.get("/health")).json()
                created = await client.post(API, json={})
        assert health["services"]["session_manager"]["status"] == "unhealthy"
        assert created.status_code == 503
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].getMessage() == "Session store unreachable at start"
        assert errors[0].store == cluster.url  # type: ignore[attr-defined]
        error: str = errors[0].error  # type: ignore[attr-defined]
        assert "\n" not in error and any(f"127.0.0.1:{port}" in error for port in cluster.ports[:MASTERS]), error
        assert "certificate verify failed" in error.lower(), error
    finally:
        await manager.close()
    assert all(cluster.dbsize(port) == 0 for port in cluster.masters())  # nothing written by that client
