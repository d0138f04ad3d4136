"""A per-client fixed-window rate limiter for the narratives API (in memory, per process).

Each client (API token or peer address) gets ``limit`` requests per ``window`` seconds,
counted from its first request in the window. The answer carries what the
``X-RateLimit-*`` headers need. Idle clients are forgotten, so memory stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 10_000


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the window ends
    retry_after: int  # whole seconds to wait (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


class RateLimiter:
    def __init__(self, limit: int, window: float, now: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.now = now
        self._windows: dict[str, tuple[float, int]] = {}  # client -> (window end, count)

    def _forget_idle(self, now: float) -> None:
        if len(self._windows) >= MAX_CLIENTS:
            self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
            while len(self._windows) >= MAX_CLIENTS:  # all busy: drop the oldest windows
                self._windows.pop(next(iter(self._windows)))

    def hit(self, client: str) -> Decision:
        now = self.now()
        end, count = self._windows.get(client, (0.0, 0))
        if end <= now:
            self._forget_idle(now)
            end, count = now + self.window, 0
        if count >= self.limit:
            wait = max(1, math.ceil(end - now))
            return Decision(False, self.limit, 0, end, wait)
        count += 1
        self._windows[client] = (end, count)
        return Decision(True, self.limit, self.limit - count, end, 0)
