"""Settings, validated by pydantic-settings, and the spec's module constants.

`Settings(...)` built in code takes only its arguments (tests and embedders are not surprised by the
environment); `Settings.from_env()` reads the SESSION_* variables and a `.env` file in the working
directory (the environment wins). Any bad value is a `ConfigError` whose message is one line naming the
variable and the value. The module constants are read once at import and never raise, so importing the
app cannot fail on the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

import faultmaven.auth as auth
from faultmaven.exceptions import ConfigError
from faultmaven.stores.urls import STORE_SCHEMES, cluster_nodes, is_cluster, tls_options

PREFIX = "SESSION_"
ADMIN_TOKEN_MIN_CHARS = 32  # as a JWT secret's 32 bytes: guessing it is out of reach
SECRET_FIELDS = ("admin_token", "jwt_secret")  # never echoed, not even in an error
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_ORIGIN_HOST = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # minutes, megabytes
Count = Annotated[int, Field(ge=1, strict=False)]


def web_origin(text: str) -> str:
    """`text` as a browser writes it in Origin (scheme://host[:port], lower case, no default port);
    ValueError for anything else: a path, a query, credentials, a wildcard or another scheme."""
    text = text.strip()
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has a malformed port") from None
    host = parts.hostname or ""
    if (
        parts.scheme.lower() not in ("http", "https")
        or not (_ORIGIN_HOST.fullmatch(host) or _bracketed_ipv6(parts.netloc))
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or text.endswith(("?", "#"))
    ):
        raise ValueError(f"{text!r} is not an origin like https://host[:port]")
    scheme = parts.scheme.lower()
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{shown}" + (f":{port}" if port is not None and port != default else "")


def _bracketed_ipv6(netloc: str) -> bool:
    host = netloc.rpartition("]")[0].removeprefix("[") if netloc.startswith("[") else ""
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


class Settings(BaseSettings):
    """Validated configuration; construct it directly in code or with `from_env`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore", validate_default=True)
    reads_environment: ClassVar[bool] = False  # from_env() reads the environment and ./.env too

    timeout_minutes: PositiveFinite = 30.0
    cleanup_interval_minutes: PositiveFinite = 15.0
    max_memory_mb: PositiveFinite = 100.0
    cleanup_batch_size: Count = 50
    cleanup_enabled: bool = True
    store_url: str = "memory://"
    max_data_bytes: Count = 65536
    health_max_active: Annotated[int, Field(ge=0)] = 1000
    admin_token: SecretStr | None = None  # at least ADMIN_TOKEN_MIN_CHARS; never printed
    # With no identity source, the CLI serves only on a loopback address unless this is true.
    allow_unauthenticated: bool = False
    # The in-memory store's snapshot file (unset: none) and how often it is written while serving (0: on stop).
    snapshot_path: str | None = None
    snapshot_interval_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 60.0
    audit_log_path: str | None = None  # also write the audit records to this JSON-lines file
    min_timeout_minutes: PositiveFinite = 1.0
    max_timeout_minutes: PositiveFinite = 1440.0
    absolute_timeout_minutes: PositiveFinite = 1440.0
    max_per_user: Annotated[int, Field(ge=0)] = 10  # 0: no limit
    user_header: str | None = None  # e.g. X-User-ID, set by a gateway that authenticated the user
    # Identity from a bearer JWT (faultmaven.auth): a shared secret or a public key file, never both.
    jwt_secret: SecretStr | None = None  # HS256/384/512
    jwt_public_key: str | None = None  # path: a PEM public key (or certificate) or a JWKS JSON file
    jwt_algorithms: str | None = None  # comma-separated; unset: those of the key's kind
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_user_claim: str = Field(default="sub", pattern=r"^[!#-\[\]-~]{1,128}$")  # no space, quote or backslash
    jwt_leeway_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 30.0
    # Browser origins allowed to call the session routes (CORS); empty: no CORS middleware at all.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # At the store's budget: refuse new sessions (503) or evict the least recently active live ones.
    memory_policy: Literal["reject", "evict"] = "reject"
    # Redis: creates are refused once a master's used_memory is within this fraction of its maxmemory.
    redis_memory_reserve: Annotated[float, Field(ge=0.0, le=0.9, allow_inf_nan=False)] = 0.10

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc) from None
        self._check_bounds()
        self._check_jwt()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Built in code: its arguments only; from_env() adds the environment, then ./.env."""
        if cls.reads_environment:
            return (init_settings, env_settings, dotenv_settings)
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every SESSION_* variable from `env`, or from os.environ and ./.env; ConfigError on a bad one."""
        if env is None:
            return _FromEnvironment()
        return cls(**{name[len(PREFIX) :].lower(): raw for name, raw in env.items() if name.startswith(PREFIX)})

    @field_validator("admin_token", "audit_log_path", "user_header", "snapshot_path", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("admin_token")
    @classmethod
    def _long_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < ADMIN_TOKEN_MIN_CHARS:
            raise ValueError(f"must be at least {ADMIN_TOKEN_MIN_CHARS} characters (e.g. openssl rand -hex 32)")
        return value

    def __repr_args__(self) -> Any:
        """As pydantic shows it, with the store URL's password as *** (the secrets are SecretStr)."""
        for name, value in super().__repr_args__():
            yield name, redacted(value) if name == "store_url" else value

    @property
    def identity_source(self) -> str | None:
        """What names the caller: the gateway header, a JWT key, or None (a body's user_id is trusted)."""
        if self.user_header is not None:
            return f"SESSION_USER_HEADER={self.user_header}"
        if self.jwt_secret is not None or self.jwt_public_key is not None:
            return "bearer JWT"
        return None

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        text = value.strip()
        if is_cluster(text):
            cluster_nodes(text)
            tls_options(text)
            return text
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme not in STORE_SCHEMES:
            raise ValueError(
                "unknown scheme (use memory://, redis[s]://host:port/db or redis[s]+cluster://host:port,...)"
            )
        tls_options(text)
        return text

    @field_validator("memory_policy", mode="before")
    @classmethod
    def _policy_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("user_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise ValueError("not an HTTP header name")
        return value

    @field_validator("jwt_secret", "jwt_public_key", "jwt_algorithms", "jwt_audience", "jwt_issuer", mode="before")
    @classmethod
    def _empty_jwt_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("jwt_algorithms")
    @classmethod
    def _algorithm_names(cls, value: str | None) -> str | None:
        return None if value is None else ",".join(auth.parse_algorithms(value))

    def token_policy(self) -> auth.TokenPolicy:
        """What a bearer token must satisfy, from SESSION_JWT_*."""
        secret = None if self.jwt_secret is None else self.jwt_secret.get_secret_value().encode()
        return auth.TokenPolicy(
            secret=secret,
            key_file=self.jwt_public_key,
            algorithms=self.jwt_algorithm_names,
            user_claim=self.jwt_user_claim,
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
            leeway_s=self.jwt_leeway_seconds,
        )

    @property
    def jwt_algorithm_names(self) -> tuple[str, ...] | None:
        """SESSION_JWT_ALGORITHMS as names, or None: the key's kind decides."""
        return None if self.jwt_algorithms is None else tuple(self.jwt_algorithms.split(","))

    def _check_jwt(self) -> None:
        """One identity source; the key readable, and every listed algorithm one the key can verify."""
        secret, path = self.jwt_secret, self.jwt_public_key
        if secret is None and path is None:
            self._check_no_jwt_options()
            return
        if secret is not None and path is not None:
            raise ConfigError(f"{PREFIX}JWT_SECRET and {PREFIX}JWT_PUBLIC_KEY are both set; configure one key")
        if self.user_header is not None:
            raise ConfigError(
                f"{PREFIX}USER_HEADER={self.user_header!r} and a JWT key ({PREFIX}JWT_SECRET or "
                f"{PREFIX}JWT_PUBLIC_KEY) are both set; the caller comes from one identity source"
            )
        if secret is not None:
            self._check_jwt_secret(secret)
        elif path is not None:
            self._check_jwt_key_file(path)

    def _check_no_jwt_options(self) -> None:
        """Without a key, a JWT option set alone is a mistake the operator should hear of."""
        for name in ("algorithms", "audience", "issuer"):
            if getattr(self, f"jwt_{name}") is not None:
                raise ConfigError(
                    f"{PREFIX}JWT_{name.upper()} is set, but neither {PREFIX}JWT_SECRET nor {PREFIX}JWT_PUBLIC_KEY"
                )

    def _check_jwt_secret(self, secret: SecretStr) -> None:
        try:
            raw = auth.check_secret(secret.get_secret_value().encode())
        except ValueError as exc:  # never the secret's value in the message
            raise ConfigError(f"{PREFIX}JWT_SECRET {exc}") from None
        try:
            auth.secret_algorithms(raw, self.jwt_algorithm_names)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}JWT_ALGORITHMS={self.jwt_algorithms!r} {exc}") from None

    def _check_jwt_key_file(self, path: str) -> None:
        try:
            auth.read_key_file(path, self.jwt_algorithm_names)
        except auth.KeyFileError as exc:
            raise ConfigError(f"{PREFIX}JWT_PUBLIC_KEY={path!r} {exc}") from None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """A comma-separated list (what the variable holds), each entry written as browsers send Origin."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        return tuple(web_origin(str(item)) for item in items if str(item).strip())

    def _check_bounds(self) -> None:
        """Bounds meant for clients never refuse the operator's default timeout: a bound left unset widens
        to include SESSION_TIMEOUT_MINUTES. Bounds set explicitly that contradict each other are bad values."""
        given = self.model_fields_set
        if "min_timeout_minutes" not in given and self.timeout_minutes < self.min_timeout_minutes:
            object.__setattr__(self, "min_timeout_minutes", self.timeout_minutes)
        if "max_timeout_minutes" not in given and self.timeout_minutes > self.max_timeout_minutes:
            object.__setattr__(self, "max_timeout_minutes", self.timeout_minutes)
        lo, hi = self.min_timeout_minutes, self.max_timeout_minutes
        if lo > hi:
            raise ConfigError(f"SESSION_MIN_TIMEOUT_MINUTES={lo!r} is above SESSION_MAX_TIMEOUT_MINUTES={hi!r}")
        if not lo <= self.timeout_minutes <= hi:
            raise ConfigError(
                f"SESSION_TIMEOUT_MINUTES={self.timeout_minutes!r} is outside "
                f"SESSION_MIN_TIMEOUT_MINUTES..SESSION_MAX_TIMEOUT_MINUTES ({lo!r}..{hi!r})"
            )

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_minutes * 60.0

    @property
    def absolute_timeout_seconds(self) -> float:
        return self.absolute_timeout_minutes * 60.0


class _FromEnvironment(Settings):
    """Settings read from the process environment, then ./.env (the environment wins)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8")
    reads_environment: ClassVar[bool] = True


def _config_error(exc: ValidationError) -> ConfigError:
    """One line: the first bad variable, its value and what is wrong with it."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else "?"
    shown = "'**********'" if field in SECRET_FIELDS else repr(redacted(error.get("input")))
    return ConfigError(f"{PREFIX}{field.upper()}={shown}: {error['msg']}")


def redacted(value: object) -> object:
    """A URL with its password replaced by ***; anything else as it is."""
    if not isinstance(value, str) or "@" not in value or "://" not in value:
        return value
    scheme, _, rest = value.partition("://")
    credentials, at, host = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{colon}{'***' if colon else ''}{at}{host}"


def _lenient(field: str) -> Any:
    """The import-time reading of one variable: a bad value falls back to the default (start-up reports it)."""
    raw = os.getenv(PREFIX + field.upper())
    default = Settings.model_fields[field].default
    if raw is None:
        return default
    try:
        return getattr(Settings.from_env({PREFIX + field.upper(): raw}), field)
    except ConfigError:
        return default


# The spec's module constants, read once at import.
SESSION_TIMEOUT_MINUTES = _lenient("timeout_minutes")
SESSION_CLEANUP_INTERVAL_MINUTES = _lenient("cleanup_interval_minutes")
SESSION_MAX_MEMORY_MB = _lenient("max_memory_mb")
SESSION_CLEANUP_BATCH_SIZE = _lenient("cleanup_batch_size")
SESSION_CLEANUP_ENABLED = _lenient("cleanup_enabled")
SESSION_STORE_URL = _lenient("store_url")
SESSION_MAX_DATA_BYTES = _lenient("max_data_bytes")
SESSION_HEALTH_MAX_ACTIVE = _lenient("health_max_active")
SESSION_ADMIN_TOKEN = os.getenv("SESSION_ADMIN_TOKEN") or None
SESSION_MIN_TIMEOUT_MINUTES = _lenient("min_timeout_minutes")
SESSION_MAX_TIMEOUT_MINUTES = _lenient("max_timeout_minutes")
SESSION_ABSOLUTE_TIMEOUT_MINUTES = _lenient("absolute_timeout_minutes")
SESSION_MAX_PER_USER = _lenient("max_per_user")
SESSION_USER_HEADER = os.getenv("SESSION_USER_HEADER") or None
SESSION_MEMORY_POLICY = _lenient("memory_policy")
SESSION_REDIS_MEMORY_RESERVE = _lenient("redis_memory_reserve")
