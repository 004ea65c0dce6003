"""The rules for session data (compact UTF-8 JSON objects under a byte limit), session ids, and what a
manager does by default."""

from __future__ import annotations

import re
import sys

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionDataTooLargeError
from faultmaven.session import encode_data, is_valid_id, new_session_id
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import FakeClock, exactly


@pytest.mark.parametrize("data", [[1, 2], "text", 3])
def test_data_that_is_not_an_object_is_refused_by_name(data: object) -> None:
    """Only a JSON object is session data; the message names what was wrong, as the caller named it."""
    with pytest.raises(TypeError, match=exactly("session data must be a JSON object (a mapping)")):
        encode_data(data, 1000)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=exactly("merge patch must be a JSON object (a mapping)")):
        encode_data(data, 1000, "merge patch")  # type: ignore[arg-type]


def test_values_json_cannot_hold_are_refused_with_the_reason() -> None:
    """A value JSON has no form for is a ValueError that says so and gives json's reason."""
    with pytest.raises(ValueError, match=r"^session data is not JSON-serialisable: .*\bobject\b"):
        encode_data({"when": object()}, 1000)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_are_refused(number: float) -> None:
    """NaN and infinities are not JSON: refused, never written as bare NaN/Infinity."""
    with pytest.raises(ValueError, match=r"^session data is not JSON-serialisable: Out of range float"):
        encode_data({"x": number}, 1000)


def _frames() -> int:
    frame, count = sys._getframe(), 0
    while frame is not None:
        frame, count = frame.f_back, count + 1
    return count


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="from 3.12 the C encoder's stack has a limit of its own")
def test_data_too_deep_for_the_encoder_is_a_value_error_with_a_plain_message() -> None:
    """When the encoder runs out of stack (a call made deep in a stack), the caller gets a ValueError
    naming the data, not a RecursionError."""
    data: dict[str, object] = {}
    inner = data
    for _ in range(60):  # within MAX_DATA_DEPTH, so only the encoder's own recursion can fail
        inner["a"] = inner = {}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_frames() + 40)
    try:
        with pytest.raises(ValueError, match=exactly("session data is nested too deeply")):
            encode_data(data, 10**6)
    finally:
        sys.setrecursionlimit(limit)
    assert encode_data(data, 10**6).count(b"{") == 61


def test_data_is_compact_utf8_json_and_non_ascii_counts_as_its_utf8_bytes() -> None:
    """Non-ASCII text is kept as UTF-8 (two bytes for é), not as \\u escapes (six), and the limit counts
    those bytes."""
    blob = encode_data({"k": "é", "n": [1, 2]}, 1000)
    assert blob == '{"k":"é","n":[1,2]}'.encode()
    assert len(blob) == 20
    assert encode_data({"k": "é", "n": [1, 2]}, 20) == blob
    with pytest.raises(SessionDataTooLargeError):
        encode_data({"k": "é", "n": [1, 2]}, 19)


def test_data_of_exactly_the_limit_is_accepted_and_one_byte_more_is_refused() -> None:
    """The limit is inclusive; the error says how big the data was and what the limit is."""
    data = {"k": "v" * 100}
    size = len(encode_data(data, 10**6))
    assert encode_data(data, size) == b'{"k":"' + b"v" * 100 + b'"}'
    with pytest.raises(SessionDataTooLargeError) as refused:
        encode_data(data, size - 1)
    assert (refused.value.size, refused.value.limit) == (size, size - 1)
    assert str(refused.value) == f"session data is {size} bytes, over the limit of {size - 1} bytes"


def test_no_data_is_the_empty_object() -> None:
    assert encode_data(None, 0) == b"{}"


def test_session_ids_are_43_url_safe_characters_and_unique() -> None:
    """256 random bits, URL-safe base64 without padding."""
    ids = {new_session_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", sid) and is_valid_id(sid) for sid in ids)


async def test_only_the_answer_to_a_resuming_create_says_resumed(manager: SessionManager) -> None:
    """`session_resumed` is False on every read; True only when a create resumed the session."""
    created = await manager.create_session("alice", client_id="laptop-0001")
    resumed = await manager.create_session("alice", client_id="laptop-0001")
    assert (created.session_resumed, resumed.session_resumed) == (False, True)
    got = await manager.get_session(created.session_id)
    touched = await manager.touch_session(created.session_id)
    assert got is not None and touched is not None
    assert (got.session_resumed, touched.session_resumed) == (False, False)
    listed = await manager.list_user_sessions("alice")
    assert [s.session_resumed for s in listed] == [False]


async def test_a_session_is_of_type_troubleshooting_unless_told(manager: SessionManager) -> None:
    assert (await manager.create_session("alice")).session_type == "troubleshooting"
    assert (await manager.create_session("alice", session_type="triage")).session_type == "triage"


async def test_a_manager_without_settings_reads_the_environment(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No settings given: SESSION_* variables decide (here the idle timeout)."""
    monkeypatch.setenv("SESSION_TIMEOUT_MINUTES", "7")
    monkeypatch.setenv("SESSION_CLEANUP_ENABLED", "false")
    manager = SessionManager(MemoryStore(), clock=clock)
    assert manager.settings.timeout_minutes == 7
    assert (await manager.create_session("alice")).timeout_minutes == 7
    await manager.close()


async def test_the_cleanup_pause_runs_between_batches(clock: FakeClock) -> None:
    """The pause given to the manager is what a cleanup run awaits between its batches."""
    pauses: list[int] = []
    store = MemoryStore()

    async def pause() -> None:
        pauses.append(store.stats(clock()).stored or 0)

    settings = Settings(cleanup_batch_size=2, cleanup_enabled=False)
    manager = SessionManager(store, settings=settings, clock=clock, cleanup_pause=pause)
    for i in range(5):
        await manager.create_session(f"user-{i}")
    clock.advance(minutes=31)
    assert await manager.cleanup_inactive_sessions() == 5
    assert pauses[:2] == [3, 1]
    await manager.close()
