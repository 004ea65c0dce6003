"""RFC 7396 merge patches as the memory store applies them, and the If-Match header as PATCH reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from faultmaven.merge_patch import merge_blobs, merge_patch
from faultmaven.web.conditional import NO_VERSION, BadIfMatch, etag, if_match_version

# RFC 7396 Appendix A, each case under a key "k" (session data is always an object at the top).
RFC_7396_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


def encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7396_EXAMPLES)
def test_rfc_7396_examples(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch({"k": target, "keep": 1}, {"k": patch}) == {"k": result, "keep": 1}
    assert merge_patch({"k": target}, {"k": None}) == {}


def test_merge_leaves_its_arguments_alone_and_keeps_key_order() -> None:
    target = {"a": {"x": 1, "y": 2}, "b": 2, "c": 3}
    patch = {"c": 30, "new": {"n": None, "m": 1}, "a": {"x": None, "z": 3}}
    merged = merge_patch(target, patch)
    assert list(merged) == ["a", "b", "c", "new"] and list(merged["a"]) == ["y", "z"]
    assert merged == {"a": {"y": 2, "z": 3}, "b": 2, "c": 30, "new": {"m": 1}}
    assert target == {"a": {"x": 1, "y": 2}, "b": 2, "c": 3}
    assert patch["new"] == {"n": None, "m": 1}


def test_merged_blobs_keep_numbers_and_empty_containers_exactly() -> None:
    data = encoded({"big": 2**64 + 1, "f": 0.1 + 0.2, "e": 1e300, "arr": [], "obj": {}, "s": 'é"\\\n'})
    merged = merge_blobs(data, encoded({"n": -(2**70), "arr2": [], "obj2": {}}))
    assert merged == encoded(
        {"big": 2**64 + 1, "f": 0.1 + 0.2, "e": 1e300, "arr": [], "obj": {}, "s": 'é"\\\n', "n": -(2**70)}
        | {"arr2": [], "obj2": {}}
    )


@pytest.mark.parametrize(
    ("lines", "version"),
    [
        ([], None),
        (["*"], None),
        (['"3"'], 3),
        (['W/"3"'], 3),  # a compressing proxy may weaken the tag: it still names version 3
        (['"3", W/"3"'], 3),
        (['"7"', '"7"'], 7),
        ([' "12" ,'], 12),
        (['"abc"'], NO_VERSION),
        (['"03"'], NO_VERSION),
        (['"a,b"'], NO_VERSION),
        (['""'], NO_VERSION),
    ],
)
def test_if_match_names_one_version(lines: list[str], version: int | None) -> None:
    assert if_match_version(lines) == version


@pytest.mark.parametrize("line", ["3", '"3", "4"', '*, "3"', '"3" x', "W/3", '"3'])
def test_if_match_that_is_no_entity_tag_or_names_two_versions_is_refused(line: str) -> None:
    with pytest.raises(BadIfMatch):
        if_match_version([line])


def test_etag_is_the_quoted_version() -> None:
    assert etag(51) == '"51"' and if_match_version([etag(51)]) == 51
