"""The verdicts drawn from a master's INFO memory: the reserve's edge, no limit, the policy reasons."""

from __future__ import annotations

from faultmaven.stores.redis.info import NEAR, MasterMemory, memory_reasons

MB = 1024 * 1024


def test_creates_are_refused_from_the_reserve_edge_on() -> None:
    limit = int(100 * MB * 0.9)
    assert not MasterMemory(limit - 1, 100 * MB, "noeviction").full(0.10)
    assert MasterMemory(limit, 100 * MB, "noeviction").full(0.10)
    assert MasterMemory(limit - 10, 100 * MB, "noeviction").full(0.10, pending=10)  # bytes created since


def test_maxmemory_zero_is_no_limit() -> None:
    unlimited = MasterMemory(10**12, 0, "noeviction")
    assert not unlimited.full(0.10) and not unlimited.near(0.10) and unlimited.limit(0.10) is None


def test_near_starts_a_band_below_the_reserve() -> None:
    edge = 100 * MB * (0.9 - NEAR)
    assert MasterMemory(int(edge) + 1, 100 * MB, "noeviction").near(0.10)
    assert not MasterMemory(int(edge) - 1, 100 * MB, "noeviction").near(0.10)


def test_reasons_name_each_evicting_policy_and_count_full_masters() -> None:
    masters = {
        "a": MasterMemory(95 * MB, 100 * MB, "noeviction"),
        "b": MasterMemory(1 * MB, 100 * MB, "allkeys-lru"),
        "c": MasterMemory(1 * MB, 0, "volatile-ttl"),
    }
    reasons = memory_reasons(masters, 0.10, {})
    assert any("allkeys-lru" in r for r in reasons) and any("volatile-ttl" in r for r in reasons)
    assert any("on 1 of 3 master(s)" in r for r in reasons)
    assert memory_reasons({"a": MasterMemory(1 * MB, 100 * MB, "noeviction")}, 0.10, {}) == []
    assert MasterMemory.from_info({"used_memory": 5, "maxmemory": 7, "maxmemory_policy": "noeviction"}) == (
        MasterMemory(5, 7, "noeviction")
    )
