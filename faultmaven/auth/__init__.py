"""Identity from a bearer JWT, as one import: the algorithm policy (algorithms.py), the key files (keys.py)
and the verifier (verifier.py). Imports neither the settings nor FastAPI: the web layer builds a
TokenPolicy from the settings and asks the verifier. `faultmaven.auth.tokens`, the module these were
before, is an alias of this package (faultmaven.MOVED)."""

from __future__ import annotations

from faultmaven.auth.algorithms import (
    KNOWN_ALGORITHMS,
    KeyFileError,
    VerificationKey,
    check_secret,
    parse_algorithms,
    secret_algorithms,
)
from faultmaven.auth.keys import KeyFile, parse_key_file, read_key_file
from faultmaven.auth.verifier import InvalidToken, TokenPolicy, TokenVerifier

__all__ = [
    "KNOWN_ALGORITHMS",
    "InvalidToken",
    "KeyFile",
    "KeyFileError",
    "TokenPolicy",
    "TokenVerifier",
    "VerificationKey",
    "check_secret",
    "parse_algorithms",
    "parse_key_file",
    "read_key_file",
    "secret_algorithms",
]
