"""Identity from a bearer JWT: algorithm policy (algorithms.py), key files (keys.py) and the verifier
(verifier.py). Imports neither the settings nor FastAPI: the web layer builds a TokenPolicy from the
settings and asks the verifier."""

from faultmaven.auth.tokens import InvalidToken, KeyFileError, TokenPolicy, TokenVerifier

__all__ = ["InvalidToken", "KeyFileError", "TokenPolicy", "TokenVerifier"]
