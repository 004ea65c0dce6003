"""Settings validation, the spec's module constants and the serve command's start-up errors."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import RSAAlgorithm

from faultmaven.config import Settings
from faultmaven.exceptions import ConfigError


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert (s.timeout_minutes, s.cleanup_interval_minutes, s.max_memory_mb) == (30, 15, 100)
    assert (s.cleanup_batch_size, s.cleanup_enabled, s.store_url) == (50, True, "memory://")
    assert (s.max_data_bytes, s.health_max_active, s.admin_token) == (65536, 1000, None)
    assert (s.min_timeout_minutes, s.max_timeout_minutes, s.absolute_timeout_minutes) == (1, 1440, 1440)
    assert (s.max_per_user, s.user_header) == (10, None)


def test_every_variable_is_read() -> None:
    s = Settings.from_env(
        {
            "SESSION_TIMEOUT_MINUTES": "0.05",
            "SESSION_CLEANUP_INTERVAL_MINUTES": "0.5",
            "SESSION_MAX_MEMORY_MB": "12.5",
            "SESSION_CLEANUP_BATCH_SIZE": "7",
            "SESSION_CLEANUP_ENABLED": "off",
            "SESSION_STORE_URL": "redis://127.0.0.1:6390/2",
            "SESSION_MAX_DATA_BYTES": "1024",
            "SESSION_HEALTH_MAX_ACTIVE": "0",
            "SESSION_ADMIN_TOKEN": "s3cret-0123456789abcdef0123456789",
            "SESSION_MIN_TIMEOUT_MINUTES": "0.01",
            "SESSION_MAX_TIMEOUT_MINUTES": "480",
            "SESSION_ABSOLUTE_TIMEOUT_MINUTES": "600",
            "SESSION_MAX_PER_USER": "0",
            "SESSION_USER_HEADER": "X-User-ID",
        }
    )
    assert (s.min_timeout_minutes, s.max_timeout_minutes, s.absolute_timeout_minutes) == (0.01, 480, 600)
    assert (s.max_per_user, s.user_header) == (0, "X-User-ID")
    assert s.timeout_seconds == pytest.approx(3.0)
    assert (s.cleanup_interval_minutes, s.max_memory_mb, s.cleanup_batch_size) == (0.5, 12.5, 7)
    assert (s.cleanup_enabled, s.store_url, s.max_data_bytes) == (False, "redis://127.0.0.1:6390/2", 1024)
    assert s.health_max_active == 0 and s.admin_token is not None
    assert s.admin_token.get_secret_value() == "s3cret-0123456789abcdef0123456789"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_TIMEOUT_MINUTES", "abc"),
        ("SESSION_TIMEOUT_MINUTES", "nan"),
        ("SESSION_TIMEOUT_MINUTES", "0"),
        ("SESSION_TIMEOUT_MINUTES", "-5"),
        ("SESSION_TIMEOUT_MINUTES", "inf"),
        ("SESSION_CLEANUP_INTERVAL_MINUTES", "0"),
        ("SESSION_MAX_MEMORY_MB", "-1"),
        ("SESSION_CLEANUP_BATCH_SIZE", "0"),
        ("SESSION_CLEANUP_BATCH_SIZE", "2.5"),
        ("SESSION_CLEANUP_ENABLED", "maybe"),
        ("SESSION_STORE_URL", "postgres://x"),
        ("SESSION_STORE_URL", "redis://host:notaport/0"),
        ("SESSION_MAX_DATA_BYTES", "-1"),
        ("SESSION_HEALTH_MAX_ACTIVE", "-1"),
        ("SESSION_MIN_TIMEOUT_MINUTES", "0"),
        ("SESSION_MAX_TIMEOUT_MINUTES", "nan"),
        ("SESSION_ABSOLUTE_TIMEOUT_MINUTES", "-1"),
        ("SESSION_MAX_PER_USER", "-1"),
        ("SESSION_MAX_PER_USER", "ten"),
        ("SESSION_USER_HEADER", "X User"),
        ("SESSION_STORE_URL", "redis+cluster://127.0.0.1:7000,:7001"),
        ("SESSION_STORE_URL", "redis+cluster://127.0.0.1:70000"),
    ],
)
def test_bad_values_raise_one_line_naming_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and "\n" not in message


@pytest.mark.parametrize(
    "env",
    [
        {"SESSION_MIN_TIMEOUT_MINUTES": "60", "SESSION_MAX_TIMEOUT_MINUTES": "30", "SESSION_TIMEOUT_MINUTES": "45"},
        {"SESSION_TIMEOUT_MINUTES": "0.5", "SESSION_MIN_TIMEOUT_MINUTES": "1"},  # a set minimum above it
        {"SESSION_TIMEOUT_MINUTES": "90", "SESSION_MAX_TIMEOUT_MINUTES": "60"},  # a set maximum below it
        {"SESSION_MAX_TIMEOUT_MINUTES": "20"},  # the default timeout of 30 above a set maximum
    ],
)
def test_bounds_that_contradict_each_other_are_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value) and any(name in str(info.value) for name in env)


@pytest.mark.parametrize(
    ("timeout", "lo", "hi"),
    [("0.05", 0.05, 1440.0), ("2000", 1.0, 2000.0), ("30", 1.0, 1440.0)],
)
def test_bounds_left_unset_widen_to_include_the_default_timeout(timeout: str, lo: float, hi: float) -> None:
    s = Settings.from_env({"SESSION_TIMEOUT_MINUTES": timeout})
    assert (s.timeout_minutes, s.min_timeout_minutes, s.max_timeout_minutes) == (float(timeout), lo, hi)


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SESSION_TIMEOUT_MINUTES=45\nSESSION_MAX_PER_USER=3\nOTHER_SERVICE_VAR=x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SESSION_TIMEOUT_MINUTES", raising=False)
    monkeypatch.setenv("SESSION_MAX_PER_USER", "4")  # the environment wins over the file
    s = Settings.from_env()
    assert (s.timeout_minutes, s.max_per_user) == (45, 4)
    (tmp_path / ".env").write_text("SESSION_TIMEOUT_MINUTES=soon\n")
    with pytest.raises(ConfigError, match="SESSION_TIMEOUT_MINUTES='soon'"):
        Settings.from_env()


@pytest.mark.parametrize("raw", ["true", "1", "YES", "On"])
def test_booleans(raw: str) -> None:
    assert Settings.from_env({"SESSION_CLEANUP_ENABLED": raw}).cleanup_enabled is True


def test_settings_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigError):
        Settings(cleanup_batch_size=0)
    with pytest.raises(ConfigError):
        Settings(timeout_minutes=float("nan"))


def test_module_constants_read_at_import_and_never_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    import faultmaven.config.config as config

    monkeypatch.setenv("SESSION_TIMEOUT_MINUTES", "45")
    monkeypatch.setenv("SESSION_CLEANUP_BATCH_SIZE", "not-a-number")
    try:
        reloaded = importlib.reload(config)
        assert reloaded.SESSION_TIMEOUT_MINUTES == 45
        assert reloaded.SESSION_CLEANUP_BATCH_SIZE == 50  # bad value: import falls back, start-up reports it
    finally:
        monkeypatch.undo()
        importlib.reload(config)


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")} | env
    return subprocess.run(
        [sys.executable, "-m", "faultmaven", *args], env=full_env, capture_output=True, text=True, timeout=60
    )


def test_serve_refuses_a_bad_value_with_one_line_and_status_2() -> None:
    result = _serve({"SESSION_TIMEOUT_MINUTES": "soon"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SESSION_TIMEOUT_MINUTES" in lines[0] and "'soon'" in lines[0]
    assert "Traceback" not in result.stderr


def test_serve_refuses_several_workers_on_the_memory_store() -> None:
    result = _serve({}, "--workers", "2")
    assert result.returncode == 2
    assert "in-memory store" in result.stderr and "Traceback" not in result.stderr


def test_importing_the_app_never_fails_on_the_environment() -> None:
    code = "import faultmaven.main; print('ok')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env["SESSION_TIMEOUT_MINUTES"] = "garbage"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok"


async def test_a_default_timeout_below_the_client_minimum_serves_sessions_of_that_timeout() -> None:
    from faultmaven.session_management import SessionManager
    from tests.support import FakeClock

    clock = FakeClock()
    manager = SessionManager(settings=Settings.from_env({"SESSION_TIMEOUT_MINUTES": "0.05"}), clock=clock)
    try:
        session = await manager.create_session()
        clock.advance(2.9)
        assert await manager.touch_session(session.session_id) is not None
        clock.advance(3.0)
        assert await manager.get_session(session.session_id) is None  # idle 3 s: expired
    finally:
        await manager.close()


# -- bearer JWT identity ------------------------------------------------------------------------------

JWT_SECRET = "k" * 40


def _pem(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Key files of each kind, and broken ones, by name."""
    root = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    files = {
        "rsa.pem": _pem(rsa_key.public_key()),
        "ed.pem": _pem(ed_key.public_key()),
        "private.pem": rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "small-rsa.pem": _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),
        "jwks.json": json.dumps(
            {"keys": [RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True) | {"kid": "r1"}]}
        ).encode(),
        "oct.json": json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}).encode(),
        "private.json": json.dumps(
            {"keys": [RSAAlgorithm.to_jwk(rsa_key, as_dict=True) | {"kid": "p"}]}  # type: ignore[arg-type]
        ).encode(),
        "not-jwks.json": b'{"kty": "RSA"}',
        "broken.json": b'{"keys": [',
        "garbage.pem": b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
        "binary": bytes(range(256)),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: str(root / name) for name in files} | {"missing": str(root / "missing.pem")}


def test_jwt_defaults() -> None:
    s = Settings.from_env({})
    assert (s.jwt_secret, s.jwt_public_key, s.jwt_algorithms, s.jwt_algorithm_names) == (None, None, None, None)
    assert (s.jwt_audience, s.jwt_issuer, s.jwt_user_claim, s.jwt_leeway_seconds) == (None, None, "sub", 30)


def test_jwt_variables_are_read(key_files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings.from_env(
        {
            "SESSION_JWT_PUBLIC_KEY": key_files["rsa.pem"],
            "SESSION_JWT_ALGORITHMS": " rs256, PS256 ,",
            "SESSION_JWT_AUDIENCE": "faultmaven-sessions",
            "SESSION_JWT_ISSUER": "https://auth.faultmaven.ai",
            "SESSION_JWT_USER_CLAIM": "user_id",
            "SESSION_JWT_LEEWAY_SECONDS": "5",
        }
    )
    assert (s.jwt_public_key, s.jwt_algorithms, s.jwt_algorithm_names) == (
        key_files["rsa.pem"],
        "RS256,PS256",
        ("RS256", "PS256"),
    )
    assert (s.jwt_audience, s.jwt_issuer, s.jwt_user_claim, s.jwt_leeway_seconds) == (
        "faultmaven-sessions",
        "https://auth.faultmaven.ai",
        "user_id",
        5,
    )
    monkeypatch.setenv("SESSION_JWT_SECRET", JWT_SECRET)  # the process environment too
    from_process = Settings.from_env()
    assert from_process.jwt_secret is not None and from_process.jwt_secret.get_secret_value() == JWT_SECRET
    assert JWT_SECRET not in repr(from_process)
    assert Settings.from_env({"SESSION_JWT_SECRET": ""}).jwt_secret is None  # empty: unset


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"JWT_SECRET": JWT_SECRET, "JWT_PUBLIC_KEY": "rsa.pem"}, "SESSION_JWT_SECRET", "both set"),
        ({"JWT_SECRET": JWT_SECRET, "USER_HEADER": "X-User-ID"}, "SESSION_USER_HEADER", "one identity source"),
        ({"JWT_PUBLIC_KEY": "jwks.json", "USER_HEADER": "X-User-ID"}, "SESSION_USER_HEADER", "one identity source"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": "none"}, "SESSION_JWT_ALGORITHMS", "never accepted"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": "HS256,None"}, "SESSION_JWT_ALGORITHMS", "never accepted"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": "HS257"}, "SESSION_JWT_ALGORITHMS", "unknown algorithm"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": ","}, "SESSION_JWT_ALGORITHMS", "no algorithm"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": "RS256"}, "SESSION_JWT_ALGORITHMS", "shared secret cannot"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": "HS512"}, "SESSION_JWT_ALGORITHMS", "at least 64 bytes"),
        ({"JWT_SECRET": "short"}, "SESSION_JWT_SECRET", "at least 32"),
        ({"JWT_PUBLIC_KEY": "rsa.pem", "JWT_ALGORITHMS": "HS256"}, "SESSION_JWT_PUBLIC_KEY", "verifies HS256"),
        ({"JWT_PUBLIC_KEY": "ed.pem", "JWT_ALGORITHMS": "RS256"}, "SESSION_JWT_PUBLIC_KEY", "verifies RS256"),
        ({"JWT_PUBLIC_KEY": "jwks.json", "JWT_ALGORITHMS": "ES256"}, "SESSION_JWT_PUBLIC_KEY", "verifies ES256"),
        ({"JWT_PUBLIC_KEY": "missing"}, "SESSION_JWT_PUBLIC_KEY", "cannot be read"),
        ({"JWT_PUBLIC_KEY": "private.pem"}, "SESSION_JWT_PUBLIC_KEY", "private key"),
        ({"JWT_PUBLIC_KEY": "small-rsa.pem"}, "SESSION_JWT_PUBLIC_KEY", "1024 bits"),
        ({"JWT_PUBLIC_KEY": "garbage.pem"}, "SESSION_JWT_PUBLIC_KEY", "neither a PEM public key"),
        ({"JWT_PUBLIC_KEY": "binary"}, "SESSION_JWT_PUBLIC_KEY", "not a text file"),
        ({"JWT_PUBLIC_KEY": "broken.json"}, "SESSION_JWT_PUBLIC_KEY", "not valid JSON"),
        ({"JWT_PUBLIC_KEY": "not-jwks.json"}, "SESSION_JWT_PUBLIC_KEY", "not a JWKS"),
        ({"JWT_PUBLIC_KEY": "oct.json"}, "SESSION_JWT_PUBLIC_KEY", "symmetric key"),
        ({"JWT_PUBLIC_KEY": "private.json"}, "SESSION_JWT_PUBLIC_KEY", "private key"),
        ({"JWT_AUDIENCE": "sessions"}, "SESSION_JWT_AUDIENCE", "neither SESSION_JWT_SECRET"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_USER_CLAIM": 'us"er'}, "SESSION_JWT_USER_CLAIM", "pattern"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_LEEWAY_SECONDS": "-1"}, "SESSION_JWT_LEEWAY_SECONDS", "greater than"),
        ({"JWT_SECRET": JWT_SECRET, "JWT_LEEWAY_SECONDS": "nan"}, "SESSION_JWT_LEEWAY_SECONDS", "finite"),
    ],
)
def test_bad_jwt_settings_name_the_variable(
    env: dict[str, str], variable: str, says: str, key_files: dict[str, str]
) -> None:
    resolved = {f"SESSION_{k}": key_files.get(v, v) if k == "JWT_PUBLIC_KEY" else v for k, v in env.items()}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(resolved)
    message = str(info.value)
    assert variable in message and says in message and "\n" not in message, message
    assert JWT_SECRET not in message


def test_serve_refuses_a_jwt_key_beside_the_user_header() -> None:
    result = _serve({"SESSION_JWT_SECRET": JWT_SECRET, "SESSION_USER_HEADER": "X-User-ID"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SESSION_USER_HEADER" in lines[0] and "SESSION_JWT_SECRET" in lines[0]
    assert "Traceback" not in result.stderr and JWT_SECRET not in result.stderr
