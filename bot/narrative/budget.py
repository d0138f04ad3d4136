"""The daily LLM token budget (``llm.daily_token_budget``; 0 means no limit).

Tokens used today (UTC) are counted in the store. Crossing 80, 90 and 100 percent is
reported once a day each (the caller records a timeline event, a log line and a metric);
at 100 percent and above only templates are used until the day turns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.runtime.locks import both
from bot.store.base import Store

LEVELS = (80, 90, 100)
KEEP = 2 * 86400.0  # counters outlive their day a little, for `alertpilot` inspection


@dataclass(frozen=True)
class BudgetState:
    used: int
    limit: int

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit else 0.0

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.used >= self.limit


def day_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


class TokenBudget:
    def __init__(self, store: Store, limit: int) -> None:
        self.store = store
        self.limit = limit
        self._lock = asyncio.Lock()

    async def _read(self, key: str, now: float) -> int:
        raw = await self.store.kv_get(key, now)
        return int(raw) if raw is not None and raw.isdigit() else 0

    async def state(self, now: float) -> BudgetState:
        return BudgetState(await self._read(f"narrative:budget:{day_of(now)}", now), self.limit)

    async def spend(self, tokens: int, now: float) -> tuple[BudgetState, list[int]]:
        """Add ``tokens`` to today's count; return the new state and levels newly crossed."""
        day = day_of(now)
        used_key, warned_key = f"narrative:budget:{day}", f"narrative:budget:{day}:warned"
        async with both(self._lock, self.store.hold("narrative:budget")):
            used = await self._read(used_key, now) + max(0, tokens)
            await self.store.kv_set(used_key, str(used), now=now, ttl=KEEP)
            state = BudgetState(used, self.limit)
            if not self.limit:
                return state, []
            warned = await self._read(warned_key, now)
            crossed = [level for level in LEVELS if warned < level <= state.ratio * 100]
            if crossed:
                await self.store.kv_set(warned_key, str(crossed[-1]), now=now, ttl=KEEP)
            return state, crossed
