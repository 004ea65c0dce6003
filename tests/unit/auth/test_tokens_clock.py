"""A bearer token's exp, nbf and iat are judged by the verifier's wall clock (injected), never by the
machine's own time: the fake clocks here stand years away from it, in both directions."""

from __future__ import annotations

import time

import jwt
import pytest

from faultmaven.auth import InvalidToken, TokenPolicy, TokenVerifier

SECRET = b"a-jwt-secret-of-at-least-32-bytes-long"
FUTURE = 2_000_000_000.0  # 2033
PAST = 1_000_000_000.0  # 2001


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(clock: WallClock, leeway_s: float = 0.0) -> TokenVerifier:
    return TokenVerifier(TokenPolicy(secret=SECRET, leeway_s=leeway_s), wall_clock=clock)


def _bearer(**claims: float) -> str:
    return "Bearer " + jwt.encode({"sub": "alice", **claims}, SECRET, algorithm="HS256")


def _refusal(verifier: TokenVerifier, authorization: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        verifier.user_of(authorization)
    return refused.value.detail


def test_a_token_expired_by_the_injected_clock_is_refused_though_the_machine_would_take_it() -> None:
    exp = int(FUTURE) - 60
    assert exp > time.time() + 3600  # by the machine's clock the token has years to go
    assert _refusal(_verifier(WallClock(FUTURE)), _bearer(exp=exp)) == "token expired"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_not_yet_valid_by_the_injected_clock_is_refused_though_the_machine_would_take_it(claim: str) -> None:
    start = int(PAST) + 3600
    assert start < time.time() - 3600  # by the machine's clock the token has long been valid
    token = _bearer(exp=int(FUTURE) + 3600, **{claim: start})
    assert _refusal(_verifier(WallClock(PAST)), token) == "token not yet valid"


def test_the_leeway_counts_from_the_injected_clock_for_a_remembered_token_too() -> None:
    clock = WallClock(FUTURE)
    verifier = _verifier(clock, leeway_s=30.0)
    token = _bearer(exp=int(FUTURE), nbf=int(FUTURE) + 30)  # nbf just inside the leeway
    assert verifier.user_of(token) == "alice"
    assert verifier.remembered == 1
    clock.now = FUTURE + 29.5  # exp passed, the leeway not yet: the remembered verification still holds
    assert verifier.user_of(token) == "alice"
    clock.now = FUTURE + 30  # PyJWT's rule, kept: expired once exp <= now - leeway
    assert _refusal(verifier, token) == "token expired"
