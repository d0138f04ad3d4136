"""Circuit breakers in front of upstreams: the LLM provider, Prometheus, Alertmanager and
every HTTP target of a diagnostic.

``errors`` failed attempts within ``window`` seconds open a breaker for ``cooldown``
seconds, during which calls fail at once (narratives come from templates, diagnostics
are recorded as not checked) instead of each waiting out its own timeout and retries.
After the cool-down one call is let through (half-open): success closes it, failure opens
it again. Time is the injected clock's monotonic time. State is per process.

``Breakers`` keeps one breaker per upstream (``scheme://host:port``), made on first use.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

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
        name: str = "LLM",
    ) -> None:
        self.name = name
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
            log.info("%s circuit breaker closed", self.name)
            self.on_change(False)
        self._opened_at = None
        self._trial = False
        self._failures.clear()

    def failure(self) -> None:
        now = self.monotonic()
        if self._opened_at is not None:
            if self._trial:  # the half-open trial failed: open again
                self._opened_at, self._trial = now, False
                log.warning("%s circuit breaker re-opened for %.0fs", self.name, self.cooldown)
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()
        if len(self._failures) >= self.errors:
            self._opened_at = now
            self._failures.clear()
            log.warning(
                "%s circuit breaker open for %.0fs after %d errors in %.0fs",
                self.name,
                self.cooldown,
                self.errors,
                self.window,
            )
            self.on_change(True)

    def retry_in(self) -> float:
        """Seconds until the next trial call (0 when one may go now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self.monotonic())


def upstream_of(url: str) -> str:
    """``scheme://host:port`` of a URL: what one breaker stands for."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{parts.hostname or ''}:{port}"


class Breakers:
    """One breaker per upstream, all with the same thresholds."""

    def __init__(
        self,
        *,
        errors: int,
        window: float,
        cooldown: float,
        monotonic: Callable[[], float],
        on_change: Callable[[str, bool], None] = lambda upstream, is_open: None,
    ) -> None:
        self.errors = errors
        self.window = window
        self.cooldown = cooldown
        self.monotonic = monotonic
        self.on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, upstream: str, name: str | None = None) -> CircuitBreaker:
        """The breaker of ``upstream`` (a URL; only its scheme, host and port count)."""
        key = upstream_of(upstream)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(
                errors=self.errors,
                window=self.window,
                cooldown=self.cooldown,
                monotonic=self.monotonic,
                on_change=lambda is_open: self.on_change(key, is_open),
                name=name or key,
            )
        return breaker
