"""Versions over HTTP: the ETag on every per-session answer, If-Match on PATCH (412 with the current version,
nothing changed), and merge patches sent as application/merge-patch+json."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import SessionStore
from tests.conftest import open_client
from tests.support import FakeClock

API = "/api/v1/sessions"
MERGE = {"content-type": "application/merge-patch+json"}


@pytest.fixture
async def any_store_client(
    make_store: Callable[[], SessionStore], clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(cleanup_enabled=False, max_data_bytes=2048)
    async for client in open_client(SessionManager(make_store(), settings=settings, clock=clock)):
        yield client


async def created(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post(API, json=body)
    assert response.status_code == 201 and response.headers["etag"] == '"1"' and response.json()["version"] == 1
    sid: str = response.json()["session_id"]
    return sid


async def patch(client: httpx.AsyncClient, sid: str, data: Any, **headers: str) -> httpx.Response:
    return await client.patch(f"{API}/{sid}", json={"data": data}, headers=headers)


async def test_every_per_session_answer_carries_the_version_as_etag(client: httpx.AsyncClient) -> None:
    sid = await created(client, user_id="alice", client_id="browser-tab-1", data={"a": 1})
    patched = await patch(client, sid, {"a": 2})
    assert (patched.status_code, patched.headers["etag"], patched.json()["version"]) == (200, '"2"', 2)
    for method, path in [("GET", f"{API}/{sid}"), ("POST", f"{API}/{sid}/heartbeat")]:
        answer = await client.request(method, path)
        assert (answer.status_code, answer.headers["etag"], answer.json()["version"]) == (200, '"2"', 2), path
    resumed = await client.post(API, json={"user_id": "alice", "client_id": "browser-tab-1"})
    assert resumed.status_code == 200 and resumed.json()["session_resumed"] and resumed.headers["etag"] == '"2"'
    rotated = await client.post(f"{API}/{sid}/rotate")
    assert (rotated.status_code, rotated.headers["etag"], rotated.json()["version"]) == (200, '"2"', 2)
    assert (await client.get(f"{API}/{sid}")).status_code == 404  # the old id: no ETag for what is not there
    assert "etag" not in (await client.get(f"{API}/{sid}")).headers


async def test_if_match_on_patch(any_store_client: httpx.AsyncClient) -> None:
    client = any_store_client
    sid = await created(client, data={"a": 1})
    assert (await patch(client, sid, {"a": 2}, **{"if-match": '"1"'})).headers["etag"] == '"2"'
    stale = await patch(client, sid, {"a": 3}, **{"if-match": '"1"'})
    assert stale.status_code == 412 and stale.headers["etag"] == '"2"' and stale.json()["version"] == 2
    assert "detail" in stale.json()
    got = await client.get(f"{API}/{sid}")
    assert got.json()["data"] == {"a": 2} and got.headers["etag"] == '"2"'  # the 412 changed nothing
    for tag, version in [('W/"2"', 3), ("*", 4), ('"4", W/"4"', 5)]:  # weak tags name the same version
        answer = await patch(client, sid, {"a": version}, **{"if-match": tag})
        assert (answer.status_code, answer.headers["etag"]) == (200, f'"{version}"'), tag
    assert (await patch(client, sid, {"a": 9}, **{"if-match": '"not-a-version"'})).status_code == 412
    for bad in ["5", '"5", "6"', '*, "5"']:
        answer = await patch(client, sid, {"a": 9}, **{"if-match": bad})
        assert answer.status_code == 400 and "If-Match" in answer.json()["detail"], bad
    assert (await client.delete(f"{API}/{sid}")).status_code == 204
    assert (await patch(client, sid, {"a": 9}, **{"if-match": '"5"'})).status_code == 404  # not 412: it is gone
    assert (await client.get(f"{API}/{sid}")).status_code == 404


async def test_two_tabs_read_modify_write_and_one_retries(any_store_client: httpx.AsyncClient) -> None:
    client = any_store_client
    sid = await created(client, data={"tabs": []})
    reads = await asyncio.gather(*(client.get(f"{API}/{sid}") for _ in range(2)))
    writes = [
        patch(client, sid, {"tabs": [*read.json()["data"]["tabs"], name]}, **{"if-match": read.headers["etag"]})
        for name, read in zip(("one", "two"), reads, strict=True)
    ]
    answers = await asyncio.gather(*writes)
    assert sorted(a.status_code for a in answers) == [200, 412]
    lost = next(a for a in answers if a.status_code == 412)
    again = await client.get(f"{API}/{sid}")
    assert again.headers["etag"] == lost.headers["etag"] == '"2"'
    missing = "two" if "one" in again.json()["data"]["tabs"] else "one"
    retry = await patch(client, sid, {"tabs": [*again.json()["data"]["tabs"], missing]}, **{"if-match": '"2"'})
    assert retry.status_code == 200 and sorted(retry.json()["data"]["tabs"]) == ["one", "two"]


async def test_merge_patch_content_type(any_store_client: httpx.AsyncClient) -> None:
    client = any_store_client
    sid = await created(client, data={"a": 1, "b": 2, "o": {"x": 1, "y": 2}, "arr": [1, 2]})
    body = {"data": {"a": 10, "b": None, "o": {"y": None, "z": 3}, "arr": [3], "new": {}}}
    merged = await client.patch(f"{API}/{sid}", json=body, headers=MERGE)
    assert merged.status_code == 200 and merged.headers["etag"] == '"2"'
    assert merged.json()["data"] == {"a": 10, "o": {"x": 1, "z": 3}, "arr": [3], "new": {}}
    with_charset = {"content-type": "Application/Merge-Patch+JSON; charset=utf-8", "if-match": '"2"'}
    merged = await client.patch(f"{API}/{sid}", json={"data": {"c": 1}}, headers=with_charset)
    assert merged.status_code == 200 and merged.json()["data"]["c"] == 1 and merged.json()["version"] == 3
    stale = await client.patch(f"{API}/{sid}", json={"data": {"d": 1}}, headers=MERGE | {"if-match": '"2"'})
    assert stale.status_code == 412 and stale.json()["version"] == 3
    too_big = await client.patch(f"{API}/{sid}", json={"data": {"big": "x" * 2048}}, headers=MERGE)
    assert too_big.status_code == 413
    assert (await client.get(f"{API}/{sid}")).json()["version"] == 3  # neither changed anything


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b'{"data": [1]}', MERGE, 422),
        (b'{"data": {}, "extra": 1}', MERGE, 422),
        (b"{}", MERGE, 422),
        (b"", MERGE, 422),
        (b"{not json", MERGE, 422),
        (b"\x80", MERGE, 400),
        (b'{"data": null}', MERGE, 422),
        (b'{"data": {}}', {"content-type": "application/json-patch+json"}, 415),
        (b'{"data": {}}', {"content-type": "text/plain"}, 415),
    ],
)
async def test_bad_patches_get_a_clear_4xx_and_change_nothing(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int
) -> None:
    sid = await created(client, data={"keep": 1})
    answer = await client.patch(f"{API}/{sid}", content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert "detail" in answer.json()
    if status == 415:
        assert answer.headers["accept-patch"] == "application/json, application/merge-patch+json"
    if status == 422:
        assert all(error["loc"][0] == "body" for error in answer.json()["errors"])
    got = await client.get(f"{API}/{sid}")
    assert got.json()["data"] == {"keep": 1} and got.headers["etag"] == '"1"'


async def test_listed_sessions_carry_their_versions(clock: FakeClock) -> None:
    settings = Settings(cleanup_enabled=False, user_header="X-User-ID")
    async for client in open_client(SessionManager(settings=settings, clock=clock)):
        alice = {"X-User-ID": "alice"}
        sid = (await client.post(API, json={}, headers=alice)).json()["session_id"]
        assert (await client.patch(f"{API}/{sid}", json={"data": {"a": 1}}, headers=alice)).status_code == 200
        listed = (await client.get(API, headers=alice)).json()["sessions"]
        assert [(s["session_id"], s["version"]) for s in listed] == [(sid, 2)]
        other = await client.patch(f"{API}/{sid}", json={"data": {}}, headers={"X-User-ID": "bob", "if-match": "*"})
        assert other.status_code == 404  # another user's session is not found, whatever If-Match says


async def test_the_openapi_schema_offers_both_patch_media_types(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"][API + "/{session_id}"]["patch"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "application/merge-patch+json"}
    assert {"412", "415"} <= set(operation["responses"])
