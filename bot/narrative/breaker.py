"""The circuit breaker in front of the LLM provider.

``llm.breaker_errors`` failed attempts within ``llm.breaker_window`` seconds open it for
``llm.breaker_cooldown`` seconds, during which narratives come from templates. After the
cool-down one call is let through (half-open): success closes it, failure opens it again.
Time is the injected clock's monotonic time. State is per process.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        errors: int,
        window: float,
        cooldown: float,
        monotonic: Callable[[], float],
        on_change: Callable[[bool], None] = lambda is_open: None,
    ) -> None:
        self.errors = errors
        self.window = window
        self.cooldown = cooldown
        self.monotonic = monotonic
        self.on_change = on_change
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self.monotonic() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def abandon(self) -> None:
        """A call that was let through ended without an answer either way (cancelled)."""
        self._trial = False

    def success(self) -> None:
        if self._opened_at is not None:
            log.info("LLM circuit breaker closed")
            self.on_change(False)
        self._opened_at = None
        self._trial = False
        self._failures.clear()

    def failure(self) -> None:
        now = self.monotonic()
        if self._opened_at is not None:
            if self._trial:  # the half-open trial failed: open again
                self._opened_at, self._trial = now, False
                log.warning("LLM circuit breaker re-opened for %.0fs", self.cooldown)
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()
        if len(self._failures) >= self.errors:
            self._opened_at = now
            self._failures.clear()
            log.warning(
                "LLM circuit breaker open for %.0fs after %d errors in %.0fs: using templates",
                self.cooldown,
                self.errors,
                self.window,
            )
            self.on_change(True)
