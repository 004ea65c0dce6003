"""What a store inside one process answers to the cleanup run and the metrics: one part, a lease nobody
contends for, its budget from the settings, nothing to refresh or to close."""

from __future__ import annotations

from collections.abc import Sequence


class OneProcess:
    """The cleanup and metrics members that are trivial for a store no other process shares."""

    def cleanup_parts(self) -> Sequence[int]:
        return (0,)  # one process, one part

    async def refresh_stats(self, now: float) -> None:
        """Nothing to do: stats() counts in-process."""

    @property
    def budget_from_settings(self) -> bool:
        """SESSION_MAX_MEMORY_MB is this store's budget."""
        return True

    def memory_reasons(self) -> list[str]:
        """None of its own: the manager reports the budget from the store's stats."""
        return []

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        return "local"  # one process: nobody else to share the work with

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        return True

    async def release_lease(self, token: str) -> None:
        """Nothing held."""

    async def close(self) -> None:
        """Nothing to release: the sessions live as long as the process."""
