"""The in-memory store's byte budget (SESSION_MAX_MEMORY_MB) and what happens when a write exceeds it."""

from __future__ import annotations

from faultmaven.exceptions import SessionOverMemoryBudgetError, SessionStoreFullError


class MemoryBudget:
    """At most `max_bytes` of estimated session memory (None: no limit). When a write does not fit once
    the expired sessions are gone, `policy` decides: "reject" refuses the write, "evict" ends the least
    recently active live sessions. A session larger than the whole budget is refused either way."""

    __slots__ = ("max_bytes", "policy")

    def __init__(self, max_bytes: int | None, policy: str) -> None:
        if policy not in ("reject", "evict"):
            raise ValueError("policy must be 'reject' or 'evict'")
        self.max_bytes = max_bytes
        self.policy = policy

    @property
    def evicts(self) -> bool:
        return self.policy == "evict"

    def check(self, cost: int) -> None:
        """Refuse one session that could never fit."""
        if self.max_bytes is not None and cost > self.max_bytes:
            raise SessionOverMemoryBudgetError(cost, self.max_bytes)

    def over(self, used: int, incoming: int) -> bool:
        """Whether `incoming` more bytes on top of `used` exceed the budget."""
        return self.max_bytes is not None and used + incoming > self.max_bytes

    def refuse_if_over(self, used: int, incoming: int) -> None:
        """Under "reject", refuse a write that still does not fit."""
        if not self.evicts and self.over(used, incoming):
            raise SessionStoreFullError("SESSION_MAX_MEMORY_MB reached (SESSION_MEMORY_POLICY=reject)")
