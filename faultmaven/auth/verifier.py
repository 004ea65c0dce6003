"""The bearer-token verifier: the caller is the user a token names, once its signature and claims hold.
Whether a token has expired (or is not yet valid) is judged by the verifier's wall clock, which a test
may replace. Nothing here logs a token."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

from faultmaven.auth.algorithms import Keys, VerificationKey, secret_algorithms
from faultmaven.auth.keys import FixedKeys, KeyFile
from faultmaven.exceptions import FaultMavenError
from faultmaven.session import check_user_id

if TYPE_CHECKING:
    from jwt.types import Options  # not in every PyJWT this package accepts

VERIFIED_CACHE_SIZE = 4096  # tokens remembered as verified (a client sends the same token on every call)
MAX_TOKEN_CHARS = 8192  # far above any real token; longer is refused before it is decoded


class InvalidToken(FaultMavenError):
    """The request carries no usable token; `detail` says which check failed (never the token itself)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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
        self._source: FixedKeys | KeyFile
        if secret is not None:
            self._source = FixedKeys({None: VerificationKey(secret, secret_algorithms(secret, configured))})
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
