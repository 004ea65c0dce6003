"""The algorithm policy of bearer tokens: which JWA algorithms exist, which a shared secret or a public
key of each kind may verify, and how long a secret must be. Each key accepts only the algorithms of its
own kind, which is what keeps `alg: none` and an HS-signed token against a public key (key confusion)
out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from faultmaven.exceptions import FaultMavenError

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
EDDSA = "EdDSA"
KNOWN_ALGORITHMS = (*HMAC_ALGORITHMS, *RSA_ALGORITHMS, *EC_ALGORITHMS.values(), EDDSA)
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: a key at least the hash's size
MIN_RSA_BITS = 2048


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
