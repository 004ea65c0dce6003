"""JSON merge patch (RFC 7396) over session data, as the memory store applies it.

A patch is a JSON object: a member whose value is null removes that key, an object merges into the value
it names recursively (a non-object there is replaced by the object, its nulls dropped), and any other value
(arrays included) replaces what was there. Keys already present keep their place and new keys follow in the
patch's order, so the result's compact JSON is the same bytes the Redis store's script builds from the
stored text (faultmaven/stores/redis/lua/merge_patch.lua).
"""

from __future__ import annotations

import json
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """`target` with `patch` applied (RFC 7396 MergePatch); neither argument is changed."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def merge_blobs(data: bytes, patch: bytes) -> bytes:
    """Stored data (compact UTF-8 JSON) with an encoded patch applied, encoded the same way.

    The depth stays within the limit both inputs kept: a merged value is never deeper than the deeper of
    the target value and the patch value it came from.
    """
    merged = merge_patch(json.loads(data), json.loads(patch))
    return json.dumps(merged, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
