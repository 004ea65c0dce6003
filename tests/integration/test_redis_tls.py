"""Redis over TLS: rediss:// against a real redis-server with --tls-port and a CA made here; a wrong CA
or a plain-text port fails with one clear line."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from faultmaven.config import Settings
from faultmaven.exceptions import ConfigError, SessionStoreException
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.store import RedisStore
from tests.conftest import open_client
from tests.processes import free_port
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


def make_server_cert(directory: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    """server.pem and server.key for 127.0.0.1 and localhost, signed by `ca`."""
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
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(_key_pem(key))


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
