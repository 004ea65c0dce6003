"""The package's shape: the folders are the layers, few modules at the top, and every import path that
was documented before the folders existed still works."""

from __future__ import annotations

import importlib
from pathlib import Path

import faultmaven

PACKAGE = Path(faultmaven.__file__).parent


def test_at_most_ten_modules_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top


def test_the_layers_are_folders() -> None:
    for folder in ("web", "lifecycle", "auth", "observability", "stores/memory", "stores/redis", "stores/redis/lua"):
        assert (PACKAGE / folder).is_dir(), folder


def test_documented_import_paths_still_import_the_moved_modules() -> None:
    for old, new in faultmaven.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    from faultmaven.auth import TokenVerifier  # packages that re-export what their module held
    from faultmaven.stores.memory import MemoryStore
    from faultmaven.stores.redis import RedisStore, connect

    assert TokenVerifier and MemoryStore and RedisStore and connect
