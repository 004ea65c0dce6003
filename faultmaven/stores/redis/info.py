"""What each Redis master says about its memory limit (`INFO memory`), and the create-path verdict from it.

Redis refuses every write that could add memory once `used_memory` is over `maxmemory` under the
`noeviction` policy, and a touch is such a write: a Redis filled by new sessions locks out the sessions it
already holds. So the store refuses new sessions while a master is within a reserve of its `maxmemory`,
keeping that reserve for the writes of existing sessions. The verdict reads a snapshot refreshed in the
background (INFO works on managed Redis where CONFIG GET is disabled), so a create far from the limit
costs no extra round trip; near the limit the snapshot is refreshed more often.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Any

SAFE_POLICY = "noeviction"
MAX_AGE_S = 1.0  # far from the limit: the snapshot a create may use
NEAR_MAX_AGE_S = 0.05  # within NEAR of the reserve (or in it): refreshed this often while creates come in
NEAR = 0.05  # of maxmemory, below the reserve's edge


@dataclass(frozen=True, slots=True)
class MasterMemory:
    """One master's `INFO memory` figures; `maxmemory` 0 means no limit; `clients`: the normal clients'
    buffers, part of `used`."""

    used: int
    maxmemory: int
    policy: str
    clients: int = 0

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> MasterMemory:
        policy, clients = str(info.get("maxmemory_policy", "")), int(info.get("mem_clients_normal", 0))
        return cls(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)), policy, clients)

    def limit(self, reserve: float) -> float | None:
        """The used_memory from which new sessions are refused; None without a maxmemory."""
        return None if self.maxmemory <= 0 else self.maxmemory * (1.0 - reserve)

    def full(self, reserve: float, pending: int = 0) -> bool:
        limit = self.limit(reserve)
        return limit is not None and self.used + pending >= limit

    def near(self, reserve: float, pending: int = 0) -> bool:
        limit = self.limit(reserve)
        return limit is not None and self.used + pending >= limit - NEAR * self.maxmemory


def memory_reasons(
    masters: dict[str, MasterMemory], reserve: float, pending: dict[str, int], refusing: Set[str] = frozenset()
) -> list[str]:
    """The /health reasons: a policy that can evict sessions unseen, masters within their reserve (counting
    what this process sent there since the reading, as the create path does, and those that refused a
    create since the reading)."""
    reasons = []
    policies = sorted({m.policy for m in masters.values() if m.policy and m.policy != SAFE_POLICY})
    for policy in policies:
        reasons.append(
            f"redis maxmemory_policy is {policy}: Redis may evict sessions with no session-end event "
            f"(use {SAFE_POLICY})"
        )
    full = sum(name in refusing or m.full(reserve, pending.get(name, 0)) for name, m in masters.items())
    if full:
        reasons.append(
            f"redis used_memory within SESSION_REDIS_MEMORY_RESERVE of maxmemory on {full} of {len(masters)} "
            "master(s): new sessions there are refused"
        )
    return reasons
