"""Identity from a bearer JWT: the caller is the user a token names, once its signature and claims hold.

The key is a shared secret (HS256/384/512) or a file holding a PEM public key or a JWKS (RS*, PS*, ES*,
EdDSA). Every key is parsed once into a key object; a key file is looked at (one `stat`) at most once a
second and re-read only when it changed, so keys rotate without a restart and a request never parses a
key. Each key accepts only the algorithms of its own kind, which is what keeps `alg: none` and an
HS-signed token against a public key (key confusion) out. Whether a token has expired (or is not yet
valid) is judged by the verifier's wall clock, which a test may replace. Nothing here logs a token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from faultmaven.exceptions import FaultMavenError
from faultmaven.session import check_user_id

if TYPE_CHECKING:
    from jwt.types import Options  # not in every PyJWT this package accepts

log = logging.getLogger("faultmaven.auth.tokens")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
EDDSA = "EdDSA"
KNOWN_ALGORITHMS = (*HMAC_ALGORITHMS, *RSA_ALGORITHMS, *EC_ALGORITHMS.values(), EDDSA)
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: a key at least the hash's size
MIN_RSA_BITS = 2048
VERIFIED_CACHE_SIZE = 4096  # tokens remembered as verified (a client sends the same token on every call)
MAX_TOKEN_CHARS = 8192  # far above any real token; longer is refused before it is decoded
RECHECK_SECONDS = 1.0  # how often a key file is looked at
_RACY_SECONDS = 2.0  # a file changed this recently may change again without its mtime or size moving


class InvalidToken(FaultMavenError):
    """The request carries no usable token; `detail` says which check failed (never the token itself)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class KeyFileError(FaultMavenError, ValueError):
    """The key file cannot be read or holds no usable public key."""


class VerificationKey(NamedTuple):
    """A parsed public key (or the secret's bytes) and the algorithms it verifies."""

    key: Any
    algorithms: tuple[str, ...]


Keys = Mapping[str | None, VerificationKey]  # by `kid`; a lone key without one is under None


def parse_algorithms(raw: str) -> tuple[str, ...]:
    """The comma-separated algorithm names, spelled as JWA spells them; ValueError for `none` or unknown."""
    by_upper = {name.upper(): name for name in KNOWN_ALGORITHMS}
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names:
        raise ValueError("names no algorithm")
    if any(name.lower() == "none" for name in names):
        raise ValueError("'none' is never accepted: an unsigned token proves nothing")
    unknown = [name for name in names if name.upper() not in by_upper]
    if unknown:
        raise ValueError(f"unknown algorithm {unknown[0]!r} (known: {', '.join(KNOWN_ALGORITHMS)})")
    return tuple(dict.fromkeys(by_upper[name.upper()] for name in names))


def check_secret(secret: bytes) -> bytes:
    """The secret, if long enough for HS256; ValueError (saying its length, never its value) otherwise."""
    if len(secret) < HMAC_MIN_BYTES["HS256"]:
        raise ValueError(f"is {len(secret)} bytes; an HMAC secret needs at least 32 (RFC 7518 3.2)")
    return secret


def secret_algorithms(secret: bytes, configured: tuple[str, ...] | None) -> tuple[str, ...]:
    """The HS algorithms a secret verifies: the configured ones (each must be HS and fit the secret's
    length) or, unset, every HS algorithm the secret is long enough for. ValueError otherwise."""
    check_secret(secret)
    if configured is None:
        return tuple(alg for alg in HMAC_ALGORITHMS if len(secret) >= HMAC_MIN_BYTES[alg])
    for alg in configured:
        if alg not in HMAC_ALGORITHMS:
            raise ValueError(f"lists {alg}, which a shared secret cannot verify (HS256, HS384, HS512 only)")
        if len(secret) < HMAC_MIN_BYTES[alg]:
            raise ValueError(f"lists {alg}, which needs a secret of at least {HMAC_MIN_BYTES[alg]} bytes")
    return configured


def key_family(key: Any) -> tuple[str, ...]:
    """The algorithms a public key of this kind verifies (RSA: RS* and PS*; EC: the curve's ES*; EdDSA)."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"holds an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise KeyFileError(f"holds an EC key on the unsupported curve {key.curve.name}")
        return (alg,)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return (EDDSA,)
    raise KeyFileError("holds no RSA, EC, Ed25519 or Ed448 public key")


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
class _FixedKeys:
    """A key that never changes: the shared secret."""

    fixed: Keys
    generation: int = 0

    def keys(self) -> Keys:
        return self.fixed


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPolicy:
    """What a token must satisfy: its key (a shared secret, or a key file's path), the algorithms allowed
    (None: those of the key's kind), the claim naming the user, the audience and issuer when set, and the
    leeway on exp/nbf. Settings.token_policy() builds it from SESSION_JWT_*."""

    secret: bytes | None = None
    key_file: str | None = None
    algorithms: tuple[str, ...] | None = None
    user_claim: str = "sub"
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 30.0


class TokenVerifier:
    """Checks `Authorization: Bearer <JWT>` against the configured key and returns the token's user.

    A token that passed is remembered (by a keyed digest, never the token itself) with its user and the
    instant it expires (exp plus the leeway), so the same token on the next call costs a dict lookup
    instead of PyJWT's decode and a signature check. A remembered verification counts only while the
    keys it was made with are the current ones; refusals are never remembered.

    `clock` (monotonic) paces the key file's rechecks; `wall_clock` (seconds since the epoch) is what
    exp, nbf and iat are judged against, both for a full check and for a remembered one.
    """

    def __init__(
        self,
        policy: TokenPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self._wall_clock = wall_clock
        self._verified: dict[bytes, tuple[str, float, int]] = {}  # digest -> (user, valid until, generation)
        self._digest_key = secrets.token_bytes(16)
        configured, secret = policy.algorithms, policy.secret
        self._source: _FixedKeys | KeyFile
        if secret is not None:
            self._source = _FixedKeys({None: VerificationKey(secret, secret_algorithms(secret, configured))})
        elif policy.key_file is not None:
            self._source = KeyFile(policy.key_file, configured, clock=clock)
        else:
            raise ValueError("neither SESSION_JWT_SECRET nor SESSION_JWT_PUBLIC_KEY is set")
        self._claim = policy.user_claim
        self._audience = policy.audience
        self._issuer = policy.issuer
        self._leeway = policy.leeway_s
        self._jwt = _ClockedJWT(
            {
                "require": ["exp", self._claim],
                "verify_aud": self._audience is not None,  # checked when set; otherwise any aud is fine
                "verify_sub": False,  # the user claim is checked below, whichever it is
                "enforce_minimum_key_length": True,
            },
            leeway=self._leeway,
            wall_clock=wall_clock,
        )

    @property
    def remembered(self) -> int:
        """How many verified tokens are remembered (at most VERIFIED_CACHE_SIZE)."""
        return len(self._verified)

    def user_of(self, authorization: str | None) -> str:
        """The user the bearer token names; InvalidToken saying why when there is no valid one."""
        token = _bearer_token(authorization)
        keys = self._source.keys()
        generation = self._source.generation
        digest = hashlib.blake2b(token.encode(), digest_size=16, key=self._digest_key).digest()
        known = self._verified.get(digest)
        if known is not None and known[2] == generation and self._wall_clock() < known[1]:
            return known[0]
        user, valid_until = self._verify(token, keys)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)), None)  # the oldest goes
        self._verified[digest] = (user, valid_until, generation)
        return user

    def _verify(self, token: str, keys: Keys) -> tuple[str, float]:
        """The full check: the token's user and the instant it stops being valid."""
        key = _key_for(token, keys)
        try:
            claims = self._jwt.decode(
                token,
                key.key,
                algorithms=key.algorithms,
                audience=self._audience,
                issuer=self._issuer,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        try:
            user = check_user_id(claims[self._claim])
        except ValueError:
            raise InvalidToken(f"{self._claim} claim is not a valid user id") from None
        return user, int(claims["exp"]) + self._leeway  # as _ClockedJWT reads it: expired once exp <= now - leeway


class _ClockedJWT(jwt.PyJWT):
    """PyJWT with exp, nbf and iat judged against `wall_clock` instead of PyJWT's own reading of the time.

    They are checked as PyJWT checks them (the same order, errors and leeway) in its hook for subclasses,
    which runs once the signature holds and before the other claims (iss, aud) are looked at; PyJWT's own
    time checks are off."""

    def __init__(self, options: Options, *, leeway: float, wall_clock: Callable[[], float]) -> None:
        super().__init__(options | {"verify_exp": False, "verify_nbf": False, "verify_iat": False})
        self._required = tuple(options.get("require", ()))
        self._leeway = leeway
        self._wall_clock = wall_clock

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        payload = super()._decode_payload(decoded)
        for claim in self._required:  # PyJWT's first check: a token without exp is told so, not judged
            if payload.get(claim) is None:
                raise jwt.MissingRequiredClaimError(claim)
        now = self._wall_clock()
        if "iat" in payload and _instant(payload, "iat", jwt.InvalidIssuedAtError) > now + self._leeway:
            raise jwt.ImmatureSignatureError("The token is not yet valid (iat)")
        if "nbf" in payload and _instant(payload, "nbf", jwt.DecodeError) > now + self._leeway:
            raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
        if "exp" in payload and _instant(payload, "exp", jwt.DecodeError) <= now - self._leeway:
            raise jwt.ExpiredSignatureError("Signature has expired")
        return payload


def _instant(payload: dict[str, Any], claim: str, error: type[jwt.PyJWTError]) -> int:
    """A time claim as PyJWT reads it (whole seconds since the epoch); `error` when it is not a number."""
    try:
        return int(payload[claim])
    except (ValueError, TypeError, OverflowError):
        raise error(f"{claim} must be an integer") from None


def _key_for(token: str, keys: Keys) -> VerificationKey:
    """The key the token's `kid` names; a lone key serves a token without one (a lone key without a kid,
    every token)."""
    if len(keys) == 1 and None in keys:
        return keys[None]
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None
    if kid is None:
        if len(keys) == 1:
            return next(iter(keys.values()))
        raise InvalidToken("token has no kid")
    key = keys.get(kid)
    if key is None:
        raise InvalidToken("unknown key id")
    return key


def _bearer_token(authorization: str | None) -> str:
    if authorization is None:
        raise InvalidToken("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("missing bearer token")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("malformed token")
    return token


def _reason(exc: jwt.PyJWTError) -> str:
    """What failed, in a few fixed words: never PyJWT's message, never the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(exc, jwt.InvalidSignatureError | jwt.InvalidKeyError):
        return "invalid signature"
    return "malformed token"
