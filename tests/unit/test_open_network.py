"""What an open network needs at start: protected mode without an identity source, secrets that never
print, a warning for every identity setting that trusts too much."""

from __future__ import annotations

import logging
import os

import pytest

from faultmaven import cli
from faultmaven.config import Settings
from faultmaven.exceptions import ConfigError
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock

TOKEN = "an-admin-token-of-32-characters!"
JWT_SECRET = "a-jwt-secret-of-at-least-32-bytes-long"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SESSION_* variable of the machine's, and no .env file read from the working directory."""
    for name in [n for n in os.environ if n.startswith("SESSION_")]:
        monkeypatch.delenv(name)


def test_an_admin_token_under_32_characters_is_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigError, match=r"SESSION_ADMIN_TOKEN.*at least 32 characters") as raised:
        Settings(admin_token="short-but-secret")
    assert "short-but-secret" not in str(raised.value)
    assert Settings(admin_token=TOKEN).admin_token is not None


def test_secrets_never_print() -> None:
    settings = Settings(admin_token=TOKEN, jwt_secret=JWT_SECRET, store_url="redis://user:Pa55word@h:6379/0")
    for text in (repr(settings), str(settings), repr(settings.model_dump())):
        assert TOKEN not in text and JWT_SECRET not in text
    for text in (repr(settings), str(settings)):
        assert "Pa55word" not in text and "user:***@h" in text


def test_a_config_error_redacts_the_store_urls_password() -> None:
    with pytest.raises(ConfigError, match="SESSION_STORE_URL") as raised:
        Settings(store_url="redis://user:Pa55word@host:bad/0")
    assert "Pa55word" not in str(raised.value) and "user:***@host" in str(raised.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com"])
def test_without_an_identity_source_the_cli_refuses_a_non_loopback_address(
    clean_env: None, host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--host", host]) == 2
    err = capsys.readouterr().err
    assert "no identity source" in err and "SESSION_ALLOW_UNAUTHENTICATED" in err and err.count("\n") == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses_are_loopback(host: str) -> None:
    assert cli.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.1", "host.local"])
def test_other_addresses_are_not(host: str) -> None:
    assert not cli.is_loopback(host)


async def started_warnings(settings: Settings, caplog: pytest.LogCaptureFixture) -> list[str]:
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="faultmaven.sessions"):
        async for _ in open_client(manager):
            pass
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_an_app_without_an_identity_source_warns_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    warnings = await started_warnings(Settings(cleanup_enabled=False), caplog)
    assert len([w for w in warnings if "No identity source" in w]) == 1


async def test_a_jwt_key_without_audience_and_issuer_warns(caplog: pytest.LogCaptureFixture) -> None:
    warnings = await started_warnings(Settings(cleanup_enabled=False, jwt_secret=JWT_SECRET), caplog)
    assert [w for w in warnings if "audience and issuer" in w]
    caplog.clear()
    pinned = Settings(cleanup_enabled=False, jwt_secret=JWT_SECRET, jwt_audience="fm", jwt_issuer="https://idp")
    assert await started_warnings(pinned, caplog) == []


async def test_a_gateway_header_is_an_identity_source(caplog: pytest.LogCaptureFixture) -> None:
    assert await started_warnings(Settings(cleanup_enabled=False, user_header="X-User-ID"), caplog) == []
