"""How hard webhooks are arriving, so that the work behind the ack steps aside in a flood.

Alertmanager waits for each ack, and retries (or, past its timeout, gives up on) one
that is late, so in a flood the acks come first. Ingest counts every webhook
(``arrived``); the inbox processor and the job runner ask ``await load.lull()`` before
each batch. While more than ``workers.flood_rate`` webhooks a second arrive, ``lull``
waits, but never longer than ``max_wait`` at a time, so processing still moves on; and
``flooding`` tells them to take small batches until the flood is over. At the rates a
real Alertmanager sends (tens of groups a second, even in an alert storm) nothing ever
waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IngestLoad:
    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        rate: float,
        window: float = 0.2,
        max_wait: float = 1.0,
        step: float = 0.05,
    ) -> None:
        self.monotonic = monotonic
        self.threshold = rate  # webhooks per second; 0: never step aside
        self.window = window
        self.max_wait = max_wait
        self.step = step
        self._started = monotonic()
        self._count = 0
        self._rate = 0.0  # of the last full window
        self._last = float("-inf")

    def arrived(self) -> None:
        """A webhook arrived (called by ingest for every request)."""
        now = self.monotonic()
        self._last = now
        self._count += 1
        elapsed = now - self._started
        if elapsed >= self.window:
            self._rate = self._count / elapsed
            self._started, self._count = now, 0

    @property
    def flooding(self) -> bool:
        if self.threshold <= 0:
            return False
        now = self.monotonic()
        if now - self._last > self.window:
            return False  # the flood stopped: nothing arrived for a whole window
        elapsed = now - self._started
        current = self._count / elapsed if elapsed >= self.window / 2 else 0.0
        return max(self._rate, current) > self.threshold

    async def lull(self) -> float:
        """Wait while webhooks flood in, at most ``max_wait``; return how long it waited."""
        waited = 0.0
        while waited < self.max_wait and self.flooding:
            await asyncio.sleep(self.step)
            waited += self.step
        return waited
