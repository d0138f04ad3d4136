"""Rate limits replicas share: Slack's per-channel pacing and PagerDuty's per-key limit
also take a slot of a window in the store when the store is shared (PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import SystemClock
from bot.errors import RetryLater
from bot.runtime.shared_limits import SharedWindow
from bot.slack.outbox import ChannelPacer
from bot.store.base import RateLimit
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore


@pytest.fixture
async def replicas(pg_url: str) -> AsyncIterator[list[PostgresStore]]:
    stores = [PostgresStore(pg_url, clock=SystemClock().now) for _ in range(2)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def test_two_replicas_pace_one_channel_together(replicas: list[PostgresStore]) -> None:
    pacers = [
        ChannelPacer(
            4.0,
            monotonic=time.monotonic,
            max_sleep=5.0,
            shared=SharedWindow(store, time.time, "slack:channel:"),
        )
        for store in replicas
    ]
    # When each send's slot was taken in the store, with the time it was taken at: what
    # the pacing is about. When the sending coroutine resumes after it is later by
    # however busy the machine is, which is not the pacing's doing.
    taken: list[float] = []
    for store in replicas:

        async def recording(
            limits: Sequence[RateLimit], *, now: float, take: Any = store.take_rate_slot
        ) -> RateLimit | None:
            full: RateLimit | None = await take(limits, now=now)
            if full is None:
                taken.append(now)
            return full

        store.take_rate_slot = recording  # type: ignore[method-assign]
    sent = 0

    async def send(pacer: ChannelPacer) -> None:
        nonlocal sent
        await pacer.wait("C1", None)
        sent += 1

    await asyncio.gather(*(send(p) for p in pacers * 3))
    taken.sort()
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert sent == 6 and len(taken) == 6
    assert min(gaps) >= 0.25 - 0.005, gaps  # 4 a second across both replicas


async def test_a_busy_shared_channel_requeues_a_job(replicas: list[PostgresStore]) -> None:
    a, b = (
        ChannelPacer(
            0.1, max_sleep=1.0, monotonic=time.monotonic, shared=SharedWindow(s, time.time, "s:")
        )
        for s in replicas
    )
    await a.wait("C1", 1)
    with pytest.raises(RetryLater, match="another replica"):
        await b.wait("C1", 2)


async def test_pagerduty_events_per_key_are_counted_across_replicas(
    replicas: list[PostgresStore],
) -> None:
    windows = [SharedWindow(s, time.time, "pagerduty:events:") for s in replicas]
    waits = [await w.take("key", 3, 60.0) for w in windows * 2]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 50 < waits[3] <= 60


async def test_one_process_on_sqlite_asks_the_store_nothing(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"), clock=time.time)
    assert not SharedWindow(store, time.time, "x:").active
    pacer = ChannelPacer(1.0, monotonic=time.monotonic, shared=SharedWindow(store, time.time, "x:"))
    await pacer.wait("C1", None)  # the store is not even open: nothing is asked of it
