"""Settings read once from the environment and validated.

The module constants mirror the original spec (values read at import, never raising, so that importing
the app cannot fail on the environment); `Settings.from_env()` is the strict path the service uses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from faultmaven.exceptions import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_SCHEMES = {"memory", "redis"}


def _number(name: str, raw: str, *, integer: bool, minimum: float, inclusive: bool) -> float:
    """Parse one numeric variable; reject NaN, infinities and values below the minimum."""
    text = raw.strip()
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if value < minimum or (value == minimum and not inclusive):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ConfigError(f"{name}={raw!r} must be {bound}")
    return value


def _boolean(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def _store_url(name: str, raw: str) -> str:
    text = raw.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid URL") from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError(f"{name}={raw!r} has an unknown scheme (use memory:// or redis://host:port/db)")
    return text


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration; construct it directly in code or with `from_env`."""

    timeout_minutes: float = 30.0
    cleanup_interval_minutes: float = 15.0
    max_memory_mb: float = 100.0
    cleanup_batch_size: int = 50
    cleanup_enabled: bool = True
    store_url: str = "memory://"
    max_data_bytes: int = 65536
    health_max_active: int = 1000
    admin_token: str | None = None
    audit_log_path: str | None = None  # also write the audit records to this JSON-lines file

    def __post_init__(self) -> None:
        # Re-validate values given in code, so that no path builds an invalid Settings.
        for f in fields(self):
            env_name = _ENV_NAMES[f.name]
            value = getattr(self, f.name)
            if f.name in _STRINGS:
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"{env_name}={value!r} must be a string")
                continue
            raw = str(value).lower() if isinstance(value, bool) else str(value)
            object.__setattr__(self, f.name, _parse(f.name, env_name, raw))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every SESSION_* variable from `env` (default os.environ); raise ConfigError on a bad one."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for attr, env_name in _ENV_NAMES.items():
            raw = source.get(env_name)
            if raw is None:
                continue
            if attr in _STRINGS:
                values[attr] = raw or None
            else:
                values[attr] = _parse(attr, env_name, raw)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_minutes * 60.0


_ENV_NAMES: dict[str, str] = {
    "timeout_minutes": "SESSION_TIMEOUT_MINUTES",
    "cleanup_interval_minutes": "SESSION_CLEANUP_INTERVAL_MINUTES",
    "max_memory_mb": "SESSION_MAX_MEMORY_MB",
    "cleanup_batch_size": "SESSION_CLEANUP_BATCH_SIZE",
    "cleanup_enabled": "SESSION_CLEANUP_ENABLED",
    "store_url": "SESSION_STORE_URL",
    "max_data_bytes": "SESSION_MAX_DATA_BYTES",
    "health_max_active": "SESSION_HEALTH_MAX_ACTIVE",
    "admin_token": "SESSION_ADMIN_TOKEN",
    "audit_log_path": "SESSION_AUDIT_LOG_PATH",
}
_STRINGS = {"admin_token", "audit_log_path"}


def _parse(attr: str, name: str, raw: str) -> object:
    if attr in ("timeout_minutes", "cleanup_interval_minutes", "max_memory_mb"):
        return _number(name, raw, integer=False, minimum=0, inclusive=False)
    if attr in ("cleanup_batch_size", "max_data_bytes"):
        return int(_number(name, raw, integer=True, minimum=1, inclusive=True))
    if attr == "health_max_active":
        return int(_number(name, raw, integer=True, minimum=0, inclusive=True))
    if attr == "cleanup_enabled":
        return _boolean(name, raw)
    if attr == "store_url":
        return _store_url(name, raw)
    raise AssertionError(attr)


def _lenient(attr: str, default: object) -> object:
    """The import-time reading: a bad value falls back to the default (start-up reports it)."""
    name = _ENV_NAMES[attr]
    raw = os.getenv(name)
    if raw is None:
        return default
    try:
        return _parse(attr, name, raw)
    except ConfigError:
        return default


_DEFAULTS = Settings()

# The spec's module constants, read once at import.
SESSION_TIMEOUT_MINUTES = _lenient("timeout_minutes", _DEFAULTS.timeout_minutes)
SESSION_CLEANUP_INTERVAL_MINUTES = _lenient("cleanup_interval_minutes", _DEFAULTS.cleanup_interval_minutes)
SESSION_MAX_MEMORY_MB = _lenient("max_memory_mb", _DEFAULTS.max_memory_mb)
SESSION_CLEANUP_BATCH_SIZE = _lenient("cleanup_batch_size", _DEFAULTS.cleanup_batch_size)
SESSION_CLEANUP_ENABLED = _lenient("cleanup_enabled", _DEFAULTS.cleanup_enabled)
SESSION_STORE_URL = _lenient("store_url", _DEFAULTS.store_url)
SESSION_MAX_DATA_BYTES = _lenient("max_data_bytes", _DEFAULTS.max_data_bytes)
SESSION_HEALTH_MAX_ACTIVE = _lenient("health_max_active", _DEFAULTS.health_max_active)
SESSION_ADMIN_TOKEN = os.getenv("SESSION_ADMIN_TOKEN") or None
