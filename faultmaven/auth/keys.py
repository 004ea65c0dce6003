"""Key files of bearer tokens: a PEM public key or a JWKS, parsed once into key objects and looked at (one
`stat`) at most once a second, re-read only when it changed, so keys rotate without a restart and a
request never parses a key."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from faultmaven.auth.algorithms import KeyFileError, Keys, VerificationKey, key_family

log = logging.getLogger("faultmaven.auth.tokens")  # the name its log lines have always carried

RECHECK_SECONDS = 1.0  # how often a key file is looked at
_RACY_SECONDS = 2.0  # a file changed this recently may change again without its mtime or size moving


def _usable(key: Any, offered: tuple[str, ...], configured: tuple[str, ...] | None) -> VerificationKey:
    allowed = offered if configured is None else tuple(alg for alg in offered if alg in configured)
    return VerificationKey(key, allowed)


def _pem_keys(text: str, configured: tuple[str, ...] | None) -> dict[str | None, VerificationKey]:
    if "PRIVATE KEY" in text:
        raise KeyFileError("holds a private key; give the public key only")
    data = text.encode()
    try:
        if "BEGIN CERTIFICATE" in text:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError("is neither a PEM public key, a PEM certificate nor a JWKS") from None
    return {None: _usable(key, key_family(key), configured)}


def _jwk_key(jwk: object) -> tuple[str | None, Any, tuple[str, ...]]:
    """One JWK of a set: its kid, key object and the algorithms it may verify."""
    if not isinstance(jwk, dict):
        raise KeyFileError("holds a JWKS entry that is not an object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise KeyFileError("holds a key whose kid is not a string")
    if jwk.get("kty") == "oct":
        raise KeyFileError(f"holds a symmetric key (kid {kid!r}); use SESSION_JWT_SECRET for a shared secret")
    if "d" in jwk:
        raise KeyFileError(f"holds a private key (kid {kid!r}); publish the public key only")
    try:
        parsed = jwt.PyJWK(jwk)
    except jwt.PyJWTError:
        raise KeyFileError(f"holds a key that cannot be read (kid {kid!r})") from None
    family = key_family(parsed.key)
    if "alg" in jwk:  # the key's own alg narrows its kind's algorithms to that one
        if parsed.algorithm_name not in family:
            raise KeyFileError(f"holds a key whose alg does not fit its kind (kid {kid!r})")
        family = (parsed.algorithm_name,)
    return kid, parsed.key, family


def _jwks_keys(text: str, configured: tuple[str, ...] | None) -> dict[str | None, VerificationKey]:
    try:
        document = json.loads(text)
    except ValueError:
        raise KeyFileError("is not valid JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError('is JSON but not a JWKS (an object with a "keys" list)')
    keys: dict[str | None, VerificationKey] = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get("use", "sig") != "sig":
            continue  # an encryption key verifies nothing
        kid, key, family = _jwk_key(entry)
        if kid in keys:
            raise KeyFileError(f"holds two keys with kid {kid!r}")
        keys[kid] = _usable(key, family, configured)
    if not keys:
        raise KeyFileError("holds no signing key")
    if len(keys) > 1 and None in keys:
        raise KeyFileError("holds several keys, not every one with a kid")
    return keys


def parse_key_file(data: bytes, configured: tuple[str, ...] | None) -> dict[str | None, VerificationKey]:
    """The keys of a key file's content: a PEM public key (or certificate) or a JWKS."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise KeyFileError("is not a text file (PEM or JWKS JSON)") from None
    return _jwks_keys(text, configured) if text.startswith("{") else _pem_keys(text, configured)


def read_key_file(path: str, configured: tuple[str, ...] | None) -> dict[str | None, VerificationKey]:
    """The keys of the file at `path`; KeyFileError if it cannot be read or parsed, or if a configured
    algorithm fits none of its keys (an HS algorithm never fits a public key)."""
    keys = parse_key_file(_read(path), configured)
    if configured is not None:
        usable = {alg for key in keys.values() for alg in key.algorithms}
        for alg in configured:
            if alg not in usable:
                raise KeyFileError(f"holds no key that verifies {alg}, which SESSION_JWT_ALGORITHMS lists")
    return keys


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise KeyFileError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None


class _Stamp(NamedTuple):
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _stamp(path: str) -> _Stamp:
    st = os.stat(path)
    return _Stamp(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class KeyFile:
    """A key file's keys, re-read when the file changes: at most one `stat` per RECHECK_SECONDS, a read
    only when inode, size or times moved (or the file changed too recently to trust them, as git's
    "racy" check). A file that cannot be read or parsed keeps the keys read before, with a warning."""

    def __init__(
        self,
        path: str,
        configured: tuple[str, ...] | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self.path = path
        self._configured = configured
        self._clock = clock
        self._recheck = recheck_seconds
        self._lock = threading.Lock()
        try:
            self._stamp = _stamp(path)  # before the read: a write in between shows at the next look
        except OSError as exc:
            raise KeyFileError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
        self._data = _read(path)
        self._racy = self._is_racy(self._stamp)
        self._keys: Keys = parse_key_file(self._data, configured)
        self.generation = 0  # +1 each time the keys are replaced: what a remembered verification was made with
        self._next_check = clock() + recheck_seconds

    def keys(self) -> Keys:
        """The current keys; looks at the file only when the recheck interval has passed."""
        now = self._clock()
        if now >= self._next_check and self._lock.acquire(blocking=False):
            try:
                self._next_check = now + self._recheck
                self._refresh()
            finally:
                self._lock.release()
        return self._keys

    @staticmethod
    def _is_racy(stamp: _Stamp) -> bool:
        return time.time_ns() - stamp.mtime_ns < _RACY_SECONDS * 1e9

    def _refresh(self) -> None:
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp and not self._racy:
                return
            with open(self.path, "rb") as file:
                data = file.read()
        except OSError as exc:
            log.warning(
                "JWT key file unreadable; keeping the keys read before",
                extra={"path": self.path, "error": exc.strerror or type(exc).__name__},
            )
            return
        changed = data != self._data
        self._stamp, self._data, self._racy = stamp, data, self._is_racy(stamp)
        if not changed:
            return
        try:
            self._keys = parse_key_file(data, self._configured)
            self.generation += 1
        except KeyFileError as exc:
            log.warning(
                "JWT key file not usable; keeping the keys read before", extra={"path": self.path, "error": str(exc)}
            )
            return
        log.info("JWT key file re-read", extra={"path": self.path, "keys": len(self._keys)})


@dataclass(frozen=True)
class FixedKeys:
    """A key that never changes: the shared secret."""

    fixed: Keys
    generation: int = 0

    def keys(self) -> Keys:
        return self.fixed
