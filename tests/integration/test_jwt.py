"""The bearer JWT as the caller, through the real app: every key kind, every refusal with its 401 and
reason, the ownership rules the gateway header has, JWKS rotation without a restart, and no token in
any log line (in process and under the served uvicorn)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

import faultmaven.auth as auth
from faultmaven.auth import keys
from faultmaven.auth import verifier as verifier_module
from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock

API = "/api/v1/sessions"
SECRET = "s" * 32 + "-shared-with-faultmaven-auth"
OTHER_SECRET = "o" * 48
CHALLENGE = 'Bearer error="invalid_token"'


@dataclass(frozen=True)
class KeyPair:
    private: Any
    alg: str

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def pem(self) -> bytes:
        return bytes(
            self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def jwk(self, kid: str) -> dict[str, Any]:
        algorithm = {"RS": RSAAlgorithm, "PS": RSAAlgorithm, "ES": ECAlgorithm, "Ed": OKPAlgorithm}[self.alg[:2]]
        return algorithm.to_jwk(self.public, as_dict=True) | {"kid": kid, "use": "sig"}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def rsa_key() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


@pytest.fixture(scope="module")
def rsa_key_2() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


@pytest.fixture(scope="module")
def ec_key() -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()), "ES256")


@pytest.fixture(scope="module")
def ed_key() -> KeyPair:
    return KeyPair(ed25519.Ed25519PrivateKey.generate(), "EdDSA")


def mint(
    key: Any, alg: str = "HS256", *, headers: dict[str, Any] | None = None, drop: tuple[str, ...] = (), **claims: Any
) -> str:
    """A token signed with `key`: sub alice, valid for five minutes, unless the claims say otherwise."""
    now = int(time.time())
    payload = {"sub": "alice", "iat": now, "exp": now + 300} | claims
    for name in drop:
        payload.pop(name)
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_jwks(path: Path, *entries: dict[str, Any]) -> str:
    path.write_text(json.dumps({"keys": list(entries)}))
    return str(path)


@asynccontextmanager
async def app_with(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False, **settings), clock=FakeClock())
    try:
        async for client in open_client(manager):
            yield client
    finally:
        await manager.close()


async def expect_refused(client: httpx.AsyncClient, headers: dict[str, str], detail: str) -> None:
    answer = await client.post(API, json={}, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["detail"] == detail
    assert answer.headers["WWW-Authenticate"] == f'{CHALLENGE}, error_description="{detail}"'


# -- every key kind ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # minting HS512 with a short secret
async def test_a_shared_secret_names_the_caller() -> None:
    async with app_with(jwt_secret=SECRET) as client:
        for alg in ("HS256", "HS384"):  # HS512 needs a 64-byte secret: left out of the defaults
            answer = await client.post(API, json={}, headers=bearer(mint(SECRET, alg)))
            assert answer.status_code == 201 and answer.json()["user_id"] == "alice"
        await expect_refused(client, bearer(mint(SECRET, "HS512")), "algorithm not allowed")
    async with app_with(jwt_secret=SECRET * 2) as client:
        answer = await client.post(API, json={}, headers=bearer(mint(SECRET * 2, "HS512")))
        assert answer.status_code == 201 and answer.json()["user_id"] == "alice"


@pytest.mark.parametrize(
    ("key_name", "accepted", "refused"),
    [
        ("rsa_key", ["RS256", "RS512", "PS256"], ["ES256"]),
        ("ec_key", ["ES256"], ["ES384"]),
        ("ed_key", ["EdDSA"], []),
    ],
)
async def test_a_pem_public_key_accepts_its_kinds_algorithms(
    key_name: str, accepted: list[str], refused: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    pair: KeyPair = request.getfixturevalue(key_name)
    path = tmp_path / "key.pem"
    path.write_bytes(pair.pem())
    async with app_with(jwt_public_key=str(path)) as client:
        for alg in accepted:
            answer = await client.post(API, json={}, headers=bearer(mint(pair.private, alg, sub=f"u-{alg}")))
            assert answer.status_code == 201, answer.text
            assert answer.json()["user_id"] == f"u-{alg}"
        for alg in refused:  # the header claims an algorithm of another kind
            other = ec.generate_private_key(ec.SECP384R1() if alg == "ES384" else ec.SECP256R1())
            await expect_refused(client, bearer(mint(other, alg)), "algorithm not allowed")


async def test_configured_algorithms_narrow_the_kinds(rsa_key: KeyPair, tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(rsa_key.pem())
    async with app_with(jwt_public_key=str(path), jwt_algorithms="RS256") as client:
        assert (await client.post(API, json={}, headers=bearer(mint(rsa_key.private, "RS256")))).status_code == 201
        await expect_refused(client, bearer(mint(rsa_key.private, "PS256")), "algorithm not allowed")


async def test_a_jwks_file_selects_the_key_by_kid(rsa_key: KeyPair, ec_key: KeyPair, tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", rsa_key.jwk("rsa-1"), ec_key.jwk("ec-1"))
    async with app_with(jwt_public_key=path) as client:
        for pair, kid in ((rsa_key, "rsa-1"), (ec_key, "ec-1")):
            token = mint(pair.private, pair.alg, headers={"kid": kid}, sub=kid)
            answer = await client.post(API, json={}, headers=bearer(token))
            assert answer.status_code == 201 and answer.json()["user_id"] == kid
        # Signed by the RSA key but naming the EC key's kid: that key verifies ES256 only.
        await expect_refused(
            client, bearer(mint(rsa_key.private, "RS256", headers={"kid": "ec-1"})), "algorithm not allowed"
        )
        await expect_refused(client, bearer(mint(rsa_key.private, "RS256", headers={"kid": "gone"})), "unknown key id")
        await expect_refused(client, bearer(mint(rsa_key.private, "RS256")), "token has no kid")


# -- every refusal ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FromNow:
    """A time claim this many seconds from the moment the test mints its token. (Made at collection, the
    claim would drift with the run: an `nbf` 600 s ahead is no longer ahead for a test that runs 10 minutes
    after the collection, as a loaded machine's run can.)"""

    seconds: int


def _claims_cases() -> list[Any]:
    return [
        pytest.param({"exp": FromNow(-120)}, (), "token expired", id="expired"),
        pytest.param({"nbf": FromNow(600)}, (), "token not yet valid", id="nbf-future"),
        pytest.param({"iat": FromNow(600)}, (), "token not yet valid", id="iat-future"),
        pytest.param({"aud": "someone-else"}, (), "wrong audience", id="wrong-audience"),
        pytest.param({}, ("aud",), "token has no aud claim", id="no-audience"),
        pytest.param({"iss": "https://evil.example"}, (), "wrong issuer", id="wrong-issuer"),
        pytest.param({}, ("iss",), "token has no iss claim", id="no-issuer"),
        pytest.param({}, ("sub",), "token has no sub claim", id="no-sub"),
        pytest.param({}, ("exp",), "token has no exp claim", id="no-exp"),
        pytest.param({"sub": 42}, (), "sub claim is not a valid user id", id="sub-number"),
        pytest.param({"sub": "al\nice"}, (), "sub claim is not a valid user id", id="sub-control"),
        pytest.param({"sub": "x" * 257}, (), "sub claim is not a valid user id", id="sub-too-long"),
        pytest.param({"exp": "soon"}, (), "malformed token", id="exp-not-a-number"),
    ]


@pytest.mark.parametrize(("claims", "drop", "detail"), _claims_cases())
async def test_a_token_whose_claims_fail_is_a_401_saying_which(
    claims: dict[str, Any], drop: tuple[str, ...], detail: str
) -> None:
    checked = {"jwt_audience": "faultmaven-sessions", "jwt_issuer": "https://auth.faultmaven.ai"}
    base = {"aud": "faultmaven-sessions", "iss": "https://auth.faultmaven.ai"}
    async with app_with(jwt_secret=SECRET, **checked) as client:
        good = await client.post(API, json={}, headers=bearer(mint(SECRET, **base)))
        assert good.status_code == 201  # the same token without the fault passes
        now = int(time.time())
        faulty = {name: now + v.seconds if isinstance(v, FromNow) else v for name, v in claims.items()}
        await expect_refused(client, bearer(mint(SECRET, drop=drop, **(base | faulty))), detail)


async def test_a_badly_signed_or_shaped_token_is_a_401_saying_which(rsa_key: KeyPair, tmp_path: Path) -> None:
    async with app_with(jwt_secret=SECRET) as client:
        await expect_refused(client, {}, "missing bearer token")
        await expect_refused(client, {"Authorization": "Basic YWxpY2U6cHc="}, "missing bearer token")
        await expect_refused(client, {"Authorization": "Bearer "}, "missing bearer token")
        await expect_refused(client, bearer("not-a-jwt"), "malformed token")
        await expect_refused(client, bearer("a.b.c"), "malformed token")
        await expect_refused(client, bearer("x" * 9000), "malformed token")
        await expect_refused(client, bearer(mint(OTHER_SECRET)), "invalid signature")
        forged = mint(SECRET)[:-4] + ("AAAA" if not mint(SECRET).endswith("AAAA") else "BBBB")
        await expect_refused(client, bearer(forged), "invalid signature")
        await expect_refused(client, bearer(mint(None, "none")), "algorithm not allowed")
        unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
        await expect_refused(client, bearer(unsigned), "algorithm not allowed")
        await expect_refused(client, bearer(mint(rsa_key.private, "RS256")), "algorithm not allowed")
        # A scheme spelled in another case is still the bearer scheme (RFC 7235).
        ok = await client.post(API, json={}, headers={"Authorization": f"bearer {mint(SECRET)}"})
        assert ok.status_code == 201


async def test_an_hs_token_signed_with_the_public_key_is_refused(rsa_key: KeyPair, tmp_path: Path) -> None:
    """Key confusion: the attacker signs HS256 with the (public) PEM bytes as the secret."""
    path = tmp_path / "key.pem"
    path.write_bytes(rsa_key.pem())
    signing_input_key = rsa_key.pem()
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60}).encode())
    signature = hmac.new(signing_input_key, header + b"." + payload, hashlib.sha256).digest()
    forged = b".".join([header, payload, jwt.utils.base64url_encode(signature)]).decode()
    async with app_with(jwt_public_key=str(path)) as client:
        await expect_refused(client, bearer(forged), "algorithm not allowed")
    # Listing HS256 next to a public key is refused at start-up, so this cannot be configured away.
    with pytest.raises(auth.KeyFileError):
        auth.read_key_file(str(path), ("HS256",))


async def test_hostile_headers_are_malformed_tokens_never_errors(tmp_path: Path, rsa_key: KeyPair) -> None:
    path = write_jwks(tmp_path / "jwks.json", rsa_key.jwk("a"), rsa_key.jwk("b") | {"kid": "b"})

    def raw(header: Any) -> str:
        h = jwt.utils.base64url_encode(json.dumps(header).encode()).decode()
        return f"{h}.{jwt.utils.base64url_encode(b'{}').decode()}.c2ln"

    async with app_with(jwt_public_key=path) as client:
        for header in ({"alg": "RS256", "kid": 7}, {"alg": "RS256", "kid": ["a"]}, ["RS256"], "x"):
            await expect_refused(client, bearer(raw(header)), "malformed token")
        await expect_refused(client, bearer(raw({"alg": ["RS256"], "kid": "a"})), "algorithm not allowed")


async def test_audience_and_issuer_are_checked_only_when_set() -> None:
    async with app_with(jwt_secret=SECRET) as client:
        token = mint(SECRET, aud="any-service", iss="https://any.example")
        assert (await client.post(API, json={}, headers=bearer(token))).status_code == 201
    async with app_with(jwt_secret=SECRET, jwt_audience="sessions") as client:
        token = mint(SECRET, aud=["dashboard", "sessions"])  # one of a list of audiences is enough
        assert (await client.post(API, json={}, headers=bearer(token))).status_code == 201


def skewed(**seconds_from_now: int) -> dict[str, str]:
    """A bearer token whose time claims lie this many seconds from now, minted just before it is sent."""
    now = int(time.time())
    return bearer(mint(SECRET, **{claim: now + seconds for claim, seconds in seconds_from_now.items()}))


async def test_leeway_allows_that_much_clock_skew() -> None:
    async with app_with(jwt_secret=SECRET) as client:  # default 30 s
        assert (await client.post(API, json={}, headers=skewed(exp=-10))).status_code == 201
        assert (await client.post(API, json={}, headers=skewed(nbf=10))).status_code == 201
        await expect_refused(client, skewed(exp=-60), "token expired")
    async with app_with(jwt_secret=SECRET, jwt_leeway_seconds=0) as client:
        await expect_refused(client, skewed(exp=-10), "token expired")


async def test_a_remembered_token_still_expires() -> None:
    """A verified token is remembered for the next calls, only until its exp (plus the leeway)."""
    async with app_with(jwt_secret=SECRET, jwt_leeway_seconds=0) as client:
        # Valid for 4 to 5 s (exp is whole seconds): a loaded machine still verifies it well before then.
        token = skewed(exp=5)
        assert (await client.post(API, json={}, headers=token)).status_code == 201
        deadline = time.monotonic() + 30
        while (answer := await client.post(API, json={}, headers=token)).status_code == 201:
            assert time.monotonic() < deadline, "a remembered token outlived its exp"
            await _tick()
        assert answer.status_code == 401 and answer.json()["detail"] == "token expired"


def test_the_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verifier_module, "VERIFIED_CACHE_SIZE", 8)
    verifier = auth.TokenVerifier(Settings(jwt_secret=SECRET).token_policy())
    tokens = ["Bearer " + mint(SECRET, sub=f"user-{i}") for i in range(20)]
    assert [verifier.user_of(t) for t in tokens] == [f"user-{i}" for i in range(20)]
    assert verifier.remembered == 8
    assert [verifier.user_of(t) for t in tokens] == [f"user-{i}" for i in range(20)]  # forgotten: checked again
    with pytest.raises(auth.InvalidToken, match="invalid signature"):
        verifier.user_of("Bearer " + mint(OTHER_SECRET))
    assert verifier.remembered == 8  # a refusal is never remembered


async def test_another_claim_can_name_the_user() -> None:
    async with app_with(jwt_secret=SECRET, jwt_user_claim="https://faultmaven.ai/user_id") as client:
        token = mint(SECRET, **{"https://faultmaven.ai/user_id": "u-77"})
        answer = await client.post(API, json={}, headers=bearer(token))
        assert answer.status_code == 201 and answer.json()["user_id"] == "u-77"
        await expect_refused(client, bearer(mint(SECRET)), "token has no https://faultmaven.ai/user_id claim")


# -- the caller's rights ------------------------------------------------------------------------------


async def test_the_token_user_has_exactly_the_gateway_headers_rights() -> None:
    alice, bob = bearer(mint(SECRET)), bearer(mint(SECRET, sub="bob"))
    async with app_with(jwt_secret=SECRET) as client:
        created = await client.post(API, json={"data": {"n": 1}}, headers=alice)
        sid = created.json()["session_id"]
        assert (await client.get(f"{API}/{sid}", headers=bob)).status_code == 404
        assert (await client.post(f"{API}/{sid}/heartbeat", headers=bob)).status_code == 404
        assert (await client.patch(f"{API}/{sid}", json={"data": {"x": 1}}, headers=bob)).status_code == 404
        assert (await client.post(f"{API}/{sid}/rotate", headers=bob)).status_code == 404
        assert (await client.delete(f"{API}/{sid}", headers=bob)).status_code == 404
        await expect_refused(client, {}, "missing bearer token")
        assert (await client.get(f"{API}/{sid}")).status_code == 401  # no token, not even for a known id
        mine = await client.get(f"{API}/{sid}", headers=alice)
        assert mine.status_code == 200 and mine.json()["data"] == {"n": 1}
        # The body's user_id: the same is fine, another is a 422; a gateway header is not an identity here.
        assert (await client.post(API, json={"user_id": "bob"}, headers=alice)).status_code == 422
        same = await client.post(API, json={"user_id": "alice"}, headers=alice)
        assert same.status_code == 201 and same.json()["user_id"] == "alice"
        spoofed = await client.post(API, json={}, headers=alice | {"X-User-ID": "bob"})
        assert spoofed.json()["user_id"] == "alice"
        rotated = await client.post(f"{API}/{sid}/rotate", headers=alice)
        assert rotated.status_code == 200
        assert (await client.delete(f"{API}/{rotated.json()['session_id']}", headers=alice)).status_code == 204


async def test_list_and_revoke_act_on_the_tokens_user_and_the_admin_token_serves_cleanup_only() -> None:
    alice, bob = bearer(mint(SECRET)), bearer(mint(SECRET, sub="bob"))
    async with app_with(jwt_secret=SECRET, admin_token="admin-token-0123456789abcdef012345") as client:
        for headers in (alice, alice, bob):
            assert (await client.post(API, json={}, headers=headers)).status_code == 201
        listed = await client.get(API, headers=alice)
        assert listed.status_code == 200 and listed.json()["total"] == 2
        assert {s["user_id"] for s in listed.json()["sessions"]} == {"alice"}
        assert (await client.get(API, params={"user_id": "bob"}, headers=alice)).status_code == 404
        assert (await client.get(API, params={"user_id": "alice"}, headers=alice)).status_code == 200
        assert (await client.delete(API, params={"user_id": "bob"}, headers=alice)).status_code == 404
        # The admin token is not a JWT: with a JWT key set, list and revoke need the user's own token.
        await expect_list_refused(client, bearer("admin-token-0123456789abcdef012345"))
        revoked = await client.delete(API, headers=alice)
        assert revoked.status_code == 200 and revoked.json() == {"revoked": 2}
        assert (await client.get(API, headers=bob)).json()["total"] == 1
        assert (await client.get(API, headers=alice)).json()["total"] == 0
        # The cleanup route keeps its admin bearer token; a user's JWT is not it.
        admin = bearer("admin-token-0123456789abcdef012345")
        assert (await client.post(f"{API}/cleanup", headers=admin)).status_code == 200
        assert (await client.post(f"{API}/cleanup", headers=alice)).status_code == 401


async def expect_list_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    answer = await client.get(API, headers=headers)
    assert answer.status_code == 401 and answer.json()["detail"] == "malformed token"
    assert answer.headers["WWW-Authenticate"].startswith(CHALLENGE)


# -- key rotation -------------------------------------------------------------------------------------


async def test_a_rewritten_jwks_is_read_without_a_restart(
    rsa_key: KeyPair, rsa_key_2: KeyPair, ed_key: KeyPair, tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, rsa_key.jwk("2026-01"), ed_key.jwk("ed-1"))
    old = bearer(mint(rsa_key.private, "RS256", headers={"kid": "2026-01"}))
    new = bearer(mint(rsa_key_2.private, "RS256", headers={"kid": "2026-02"}))
    async with app_with(jwt_public_key=str(path)) as client:
        assert (await client.post(API, json={}, headers=old)).status_code == 201
        await expect_refused(client, new, "unknown key id")
        staged = tmp_path / "jwks.json.new"  # rotated the way an operator would: write, then rename
        write_jwks(staged, rsa_key_2.jwk("2026-02"), ed_key.jwk("ed-1"))
        os.replace(staged, path)
        deadline = time.monotonic() + KEY_FILE_SEEN_S
        while (await client.post(API, json={}, headers=new)).status_code != 201:
            assert time.monotonic() < deadline, "the rewritten key file was not read"
            await _tick()
        await expect_refused(client, old, "unknown key id")
        path.write_text(json.dumps({"keys": [rsa_key.jwk("2026-01")]}))  # rewritten in place this time
        deadline = time.monotonic() + KEY_FILE_SEEN_S
        while (await client.post(API, json={}, headers=old)).status_code != 201:
            assert time.monotonic() < deadline, "the file rewritten in place was not read"
            await _tick()


KEY_FILE_SEEN_S = 30  # the file is looked at once a second; the deadline leaves a loaded machine room


async def _tick() -> None:
    await asyncio.sleep(0.05)  # polling a condition under a deadline: the next look at the file


async def test_a_key_file_gone_before_the_first_request_is_a_503(rsa_key: KeyPair, tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(rsa_key.pem())
    async with app_with(jwt_public_key=str(path)) as client:  # validated at start-up, then removed
        path.unlink()
        token = bearer(mint(rsa_key.private, "RS256"))
        answer = await client.post(API, json={}, headers=token)
        assert answer.status_code == 503 and answer.json()["detail"] == "token keys unavailable"
        path.write_bytes(rsa_key.pem())  # back: served from the next request on
        assert (await client.post(API, json={}, headers=token)).status_code == 201


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _verifier(path: str, clock: ManualClock) -> auth.TokenVerifier:
    return auth.TokenVerifier(Settings(jwt_public_key=path).token_policy(), clock=clock)


def test_the_key_file_is_looked_at_once_a_second_and_parsed_only_when_it_changed(
    rsa_key: KeyPair, rsa_key_2: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, rsa_key.jwk("k1"))
    clock = ManualClock()
    verifier = _verifier(str(path), clock)
    old = "Bearer " + mint(rsa_key.private, "RS256", headers={"kid": "k1"})
    new = "Bearer " + mint(rsa_key_2.private, "RS256", headers={"kid": "k2"})
    assert verifier.user_of(old) == "alice"
    write_jwks(path, rsa_key_2.jwk("k2"))
    clock.now += 0.9  # inside the interval: the cached keys, no look at the file
    assert verifier.user_of(old) == "alice"
    with pytest.raises(auth.InvalidToken, match="unknown key id"):
        verifier.user_of(new)
    clock.now += 0.1
    assert verifier.user_of(new) == "alice"
    with pytest.raises(auth.InvalidToken, match="unknown key id"):
        verifier.user_of(old)
    parsed: list[bytes] = []
    real_parse = auth.parse_key_file
    monkeypatch.setattr(keys, "parse_key_file", lambda data, conf: parsed.append(data) or real_parse(data, conf))
    for _ in range(5):  # the file unchanged: looked at, never parsed again
        clock.now += 1.0
        assert verifier.user_of(new) == "alice"
    assert parsed == []


def test_a_change_the_file_times_do_not_show_is_still_read(
    rsa_key: KeyPair, rsa_key_2: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two same-size writes inside one tick of the file system's clock leave inode, size and times alike:
    a file changed that recently is read again (and compared) at each look until it has settled."""
    path = tmp_path / "jwks.json"
    write_jwks(path, rsa_key.jwk("k1"))
    frozen = keys._stamp(str(path))
    monkeypatch.setattr(keys, "_stamp", lambda _: frozen)  # a file system whose stamps do not move
    # "Recently" is an hour here, not 2 s: the file counts as just written however slowly the test runs.
    monkeypatch.setattr(keys, "_RACY_SECONDS", 3600.0)
    clock = ManualClock()
    verifier = _verifier(str(path), clock)
    write_jwks(path, rsa_key_2.jwk("k2"))
    clock.now += 1.0
    assert verifier.user_of("Bearer " + mint(rsa_key_2.private, "RS256", headers={"kid": "k2"})) == "alice"
    settled = frozen._replace(mtime_ns=frozen.mtime_ns - 2 * 3600 * 10**9)  # changed long ago: trusted
    monkeypatch.setattr(keys, "_stamp", lambda _: settled)
    clock.now += 1.0
    verifier.user_of("Bearer " + mint(rsa_key_2.private, "RS256", headers={"kid": "k2"}))
    write_jwks(path, rsa_key.jwk("k1"))  # not seen: the stamp says unchanged and the file is not racy
    clock.now += 1.0
    with pytest.raises(auth.InvalidToken, match="unknown key id"):
        verifier.user_of("Bearer " + mint(rsa_key.private, "RS256", headers={"kid": "k1"}))


def test_a_broken_or_missing_rewrite_keeps_the_keys_read_before(
    rsa_key: KeyPair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, rsa_key.jwk("k1"))
    clock = ManualClock()
    verifier = _verifier(str(path), clock)
    token = "Bearer " + mint(rsa_key.private, "RS256", headers={"kid": "k1"})
    caplog.set_level(logging.INFO, logger="faultmaven.auth.tokens")
    path.write_text('{"keys": [')  # half written
    clock.now += 1.0
    assert verifier.user_of(token) == "alice"
    path.unlink()
    clock.now += 1.0
    assert verifier.user_of(token) == "alice"
    messages = [r.getMessage() for r in caplog.records if r.name == "faultmaven.auth.tokens"]
    assert messages == [
        "JWT key file not usable; keeping the keys read before",
        "JWT key file unreadable; keeping the keys read before",
    ]


# -- no token in any log line ------------------------------------------------------------------------


def _signatures(tokens: list[str]) -> list[str]:
    return [t.rpartition(".")[2] for t in tokens if "." in t]


async def test_no_token_in_any_log_line(json_log: io.StringIO, rsa_key: KeyPair, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, rsa_key.jwk("k1"))
    now = int(time.time())
    tokens = [
        mint(rsa_key.private, "RS256", headers={"kid": "k1"}),
        mint(rsa_key.private, "RS256", headers={"kid": "k1"}, exp=now - 600),
        mint(rsa_key.private, "RS256", headers={"kid": "nope"}),
        mint(SECRET, headers={"kid": "k1"}),
        "garbage-token-value-0123456789",
    ]
    async with app_with(jwt_public_key=str(path)) as client:
        for token in tokens:
            answer = await client.post(API, json={}, headers=bearer(token))
            sid = answer.json().get("session_id")
            if sid:
                await client.get(f"{API}/{sid}", headers=bearer(token))
        path.write_text("not a key")  # a warning from the key file, too
        deadline = time.monotonic() + KEY_FILE_SEEN_S
        while "JWT key file not usable" not in json_log.getvalue():
            assert time.monotonic() < deadline, "the broken key file was not looked at"
            await client.get(API, headers=bearer(tokens[0]))
            await _tick()
    text = json_log.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    assert sum(r.get("logger") == "faultmaven.access" and r.get("status") == 401 for r in records) >= 4
    assert any(r.get("logger") == "faultmaven.access" and r.get("status") == 201 for r in records)
    for secret in [*tokens, *_signatures(tokens), SECRET]:
        assert secret not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_served_process_never_logs_a_token(tmp_path: Path) -> None:
    """The serve command under uvicorn at debug level: tokens accepted and refused, none in stderr."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {"SESSION_JWT_SECRET": SECRET, "SESSION_CLEANUP_ENABLED": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(port), "--log-level", "debug"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    tokens = [mint(SECRET), mint(SECRET, exp=int(time.time()) - 600), mint(OTHER_SECRET), "garbage-token-value-42"]
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
            codes = [client.post(API, json={}, headers=bearer(t)).status_code for t in tokens]
            assert codes == [201, 401, 401, 401]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    text = proc.stderr.read()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert sum(r.get("logger") == "faultmaven.access" and r.get("status") == 401 for r in records) == 3
    for secret in [*tokens, *_signatures(tokens), SECRET]:
        assert secret not in text
