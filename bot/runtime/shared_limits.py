"""Rate limits that replicas share: a window in the store (``SharedState.take_rate_slot``)
behind a limiter kept in memory.

The in-memory limiters (Slack's channel pacer, PagerDuty's per-key limiter) pace one
process's sends finely and without a round trip. On a store that several replicas use
(``Store.shared``), each send also takes a slot of the store's window for the same
bucket, so that the replicas together stay within the limit; on SQLite (one process)
the in-memory limiter is the whole limit and nothing more is asked.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.store.base import RateLimit, Store

MIN_WAIT = 0.01  # s: a full window answers at least this (its entries have equal times)


class SharedWindow:
    def __init__(self, store: Store, now: Callable[[], float], prefix: str) -> None:
        self.store = store
        self._now = now
        self.prefix = prefix

    @property
    def active(self) -> bool:
        return self.store.shared

    async def take(self, bucket: str, limit: int, window: float) -> float:
        """0 once a slot is taken; else the seconds until the window has room again."""
        rate = RateLimit(self.prefix + bucket, limit, window)
        now = self._now()
        if await self.store.take_rate_slot([rate], now=now) is None:
            return 0.0
        entries = await self.store.rate_entries(rate.bucket, since=now - window, now=now)
        if len(entries) < limit:
            return MIN_WAIT
        return max(MIN_WAIT, entries[-limit] + window - now)
