"""The Redis store's Lua scripts, read once from the package's lua/ folder.

Each script is one file under faultmaven/stores/redis/lua/ whose header names its KEYS and ARGV. A Redis script
cannot include another file, so the helpers several scripts share (common.lua) are prepended here, and the
store registers each assembled text with redis-py (EVALSHA, loaded before the first call).
"""

from __future__ import annotations

from importlib.resources import files
from types import MappingProxyType

LUA_PACKAGE_DIR = "lua"
COMMON = "common.lua"
MERGE_PATCH = "merge_patch.lua"  # the RFC 7396 merge over JSON text, for update.lua
LIBRARIES = (COMMON, MERGE_PATCH)  # prepended to scripts; they read no KEYS or ARGV themselves

# The files each script is made of, in order: the store's name for a script -> its files.
SCRIPT_FILES = MappingProxyType(
    {
        "create": (COMMON, "create.lua"),
        "rotate": (COMMON, "rotate.lua"),
        "list_user": (COMMON, "list_user.lua"),
        "revoke_user": (COMMON, "revoke_user.lua"),
        "touch": (COMMON, "touch.lua"),
        "update": (COMMON, MERGE_PATCH, "update.lua"),
        "delete": (COMMON, "delete.lua"),
        "remove_idle": (COMMON, "remove_idle.lua"),
        "renew": ("renew_lease.lua",),
        "release": ("release_lease.lua",),
    }
)


def read_lua(name: str) -> str:
    """One file of the lua/ folder, as shipped in the package."""
    return (files("faultmaven.stores.redis") / LUA_PACKAGE_DIR / name).read_text(encoding="utf-8")


def _assemble() -> dict[str, str]:
    texts = {name: read_lua(name) for name in {name for parts in SCRIPT_FILES.values() for name in parts}}
    return {script: "".join(texts[name] for name in parts) for script, parts in SCRIPT_FILES.items()}


# The store's name for each script -> the Lua text Redis runs.
SCRIPTS = MappingProxyType(_assemble())
