"""The Redis merge (lua/merge_patch.lua, on the stored JSON text) builds exactly the bytes the memory
store's merge builds (faultmaven/merge_patch.py), for any data and patch: numbers of every size, empty
arrays and objects, escapes and non-ASCII text in keys and values, nulls at any depth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from faultmaven.merge_patch import merge_blobs, merge_patch
from faultmaven.stores.redis.lua_texts import MERGE_PATCH, read_lua
from tests.redis_server import RedisServer

_EVAL = read_lua(MERGE_PATCH) + "\nreturn merge_patch(ARGV[1], ARGV[2])\n"

# A few keys, so that patches hit existing keys often; the odd ones need escaping in JSON.
keys = st.sampled_from(["a", "b", "c", "é", 'q"uote', "back\\slash", "new\nline", "\u2028", "\x01", ""])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
objects = st.dictionaries(keys, values, max_size=5)


def encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@pytest.fixture(scope="module")
def lua(redis_server: RedisServer) -> Iterator[Any]:
    if redis_server.proc is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    script = client.register_script(_EVAL)
    yield lambda data, patch: script(keys=[], args=[data, patch])
    client.close()


@settings(max_examples=400)
@given(data=objects, patch=objects)
def test_the_lua_merge_builds_the_bytes_the_memory_store_builds(lua: Any, data: Any, patch: Any) -> None:
    expected = merge_blobs(encoded(data), encoded(patch))
    assert lua(encoded(data), encoded(patch)) == expected
    assert json.loads(expected) == merge_patch(data, patch)


@pytest.mark.parametrize(
    ("data", "patch"),
    [
        ({}, {}),
        ({"a": []}, {"b": {}}),
        ({"a": {}}, {"a": {"x": None}}),
        ({"a": [[], {}, [{}]]}, {"a": {"b": []}}),
        ({"n": 12345678901234567890123}, {"f": 0.30000000000000004, "e": -1.5e-300, "i": -0}),
        ({"s": 'x"}],{['}, {"t": '\\"\\'}),  # brackets and quotes inside strings are not structure
        ({"o": {"s": "}]{[", "l": ["]}", {"k": "}"}]}, "p": 1}, {"p": 2, "o": {"n": 1}}),
        ({"s": "\\", "o": {"t": '\\\\"', "u": ["\\", "}"]}}, {"o": {"t": None}, "p": "\\\\"}),  # backslash runs
        ({"deep": {"a": {"b": {"c": 1, "d": 2}}}}, {"deep": {"a": {"b": {"c": None}, "e": None}}}),
    ],
)
def test_edge_cases_round_trip_exactly(lua: Any, data: Any, patch: Any) -> None:
    assert lua(encoded(data), encoded(patch)) == merge_blobs(encoded(data), encoded(patch))
