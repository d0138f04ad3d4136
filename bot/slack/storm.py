"""Storm roll-up: when more than ``storm_threshold`` new incidents reach one channel within
``storm_window`` seconds, one roll-up message lists them and later incidents' own
messages go into its thread instead of the channel.

The storm lasts while new incidents keep arriving within the window of the last one.
State lives in the store's key-value table, so a restart keeps the storm it was in;
one lock per channel orders the decisions of concurrent jobs (across replicas too).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from bot.core.clock import Clock
from bot.records.slack import RollupMembers, StormState
from bot.runtime.locks import both
from bot.store.base import Store

TTL = 7 * 86400.0


@dataclass(frozen=True)
class Admission:
    threaded: bool  # post this incident's message in the roll-up's thread
    state: StormState


class StormTracker:
    def __init__(self, store: Store, clock: Clock, *, threshold: int, window: float) -> None:
        self.store = store
        self.clock = clock
        self.threshold = threshold
        self.window = window
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, channel: str) -> AbstractAsyncContextManager[None]:
        """The channel's storm decisions, one at a time in this process and across
        replicas sharing the store."""
        local = self._locks.setdefault(channel, asyncio.Lock())
        return both(local, self.store.hold(f"slack:storm:{channel}"))

    @staticmethod
    def _key(channel: str) -> str:
        return f"slack:storm:{channel}"

    async def load(self, channel: str) -> StormState:
        return StormState.load(await self.store.kv_get(self._key(channel), self.clock.now()))

    async def save(self, channel: str, state: StormState) -> None:
        await self.store.kv_set(self._key(channel), state.dumps(), now=self.clock.now(), ttl=TTL)
        if state.rollup_ts:
            members = RollupMembers(channel=state.rollup_channel, listed=state.listed)
            await self.store.kv_set(
                f"slack:rollup:{state.rollup_ts}",
                members.dumps(),
                now=self.clock.now(),
                ttl=TTL,
            )

    async def admit(self, channel: str, incident_id: int) -> Admission:
        """Count a new incident for ``channel``; call with ``lock(channel)`` held. Idempotent."""
        now = self.clock.now()
        state = await self.load(channel)
        seen = {int(i) for i, _ in state.recent} | set(state.listed)
        if incident_id in seen:
            return Admission(incident_id in state.threaded, state)
        in_storm = bool(state.listed) and now - state.last_new <= self.window
        if not in_storm:
            state.listed, state.threaded, state.rollup_ts, state.rollup_channel = [], [], None, None
        state.recent = [r for r in state.recent if now - r[1] <= self.window]
        state.recent.append((incident_id, now))
        state.last_new = now
        if in_storm:
            state.listed.append(incident_id)
            state.threaded.append(incident_id)
        elif len(state.recent) > self.threshold:
            state.listed = [int(i) for i, _ in state.recent]
            state.threaded = [incident_id]
        await self.save(channel, state)
        return Admission(incident_id in state.threaded, state)

    async def rollup_members(self, rollup_ts: str) -> tuple[str | None, list[int]]:
        raw = await self.store.kv_get(f"slack:rollup:{rollup_ts}", self.clock.now())
        members = RollupMembers.load(raw or None)
        return members.channel, members.listed
