"""The Redis store's Lua files: each script compiles in a real redis-server, the store runs exactly the
assembled scripts, no file in the folder goes unused, and each header names the KEYS and ARGV it reads."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

import pytest
import redis.asyncio as aioredis

from faultmaven.stores.redis.lua_texts import COMMON, LIBRARIES, SCRIPT_FILES, SCRIPTS, read_lua
from faultmaven.stores.redis.store import RedisStore

LUA_DIR = files("faultmaven.stores.redis") / "lua"
SLOTS = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")


def _lua_files() -> set[str]:
    return {entry.name for entry in LUA_DIR.iterdir() if entry.name.endswith(".lua")}


def _header(text: str) -> str:
    """The leading comment block of a file."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return "\n".join(lines[:end])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_every_script_compiles_in_redis(redis_url: str, name: str) -> None:
    """SCRIPT LOAD compiles the text: a syntax error in a file or in common.lua fails here, not on a call."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        sha = await client.script_load(SCRIPTS[name])
        assert sha == hashlib.sha1(SCRIPTS[name].encode()).hexdigest()
        assert await client.script_exists(sha) == [True]
    finally:
        await client.aclose()


async def test_the_store_runs_the_assembled_scripts(redis_url: str) -> None:
    store = RedisStore(redis_url)
    try:
        assert store.scripts.texts() == dict(SCRIPTS)
    finally:
        await store.close()


def test_every_lua_file_is_used_by_a_script() -> None:
    used = {name for parts in SCRIPT_FILES.values() for name in parts}
    assert _lua_files() == used, "a .lua file no script is made of, or a script part that is not shipped"


def test_common_is_prepended_and_reads_no_keys_or_argv() -> None:
    common = read_lua(COMMON)
    for library in LIBRARIES:
        text = read_lua(library)
        assert not SLOTS.search(text.replace(_header(text), "")), library
    for name, parts in SCRIPT_FILES.items():
        if COMMON in parts:
            assert parts[0] == COMMON and SCRIPTS[name].startswith(common)
        assert all(part in LIBRARIES for part in parts[:-1]), f"{name}: only libraries come before the script"


@pytest.mark.parametrize("name", sorted(_lua_files() - set(LIBRARIES)))
def test_each_header_names_the_keys_and_argv_the_script_reads(name: str) -> None:
    text = read_lua(name)
    header = _header(text)
    body = text[len(header) :]
    assert header, f"{name} has no header comment"
    read = set(SLOTS.findall(body))
    named = set(SLOTS.findall(header))
    assert read, f"{name} reads no KEYS or ARGV"
    assert read <= named, f"{name} reads {sorted(read - named)} without naming them in its header"


LIVE_SCRIPTS = ("touch.lua", "update.lua", "rotate.lua", "create.lua")  # act on a live session (create: resume)
NUMBERED_FIELD = re.compile(r"\bfields\[\d+\]")


@pytest.mark.parametrize("name", LIVE_SCRIPTS)
def test_scripts_acting_on_a_live_session_check_it_with_common_live_session(name: str) -> None:
    body = read_lua(name).replace(_header(read_lua(name)), "")
    assert "live_session(" in body, f"{name} checks liveness its own way"


@pytest.mark.parametrize("name", sorted(_lua_files() - {COMMON}))
def test_only_common_reads_a_whole_session_hash_and_fields_go_by_name(name: str) -> None:
    """A script reads a session's fields through common.lua (stored_session, live_session) and names each
    field (USER, ACTIVE...), so a field's place in FIELDS is written down once."""
    body = read_lua(name).replace(_header(read_lua(name)), "")
    assert "unpack(FIELDS)" not in body, f"{name} reads a session hash itself"
    assert not NUMBERED_FIELD.search(body), f"{name} reads a session field by its number"
