"""PagerDuty Events API v2 out: one POST per event, and the per-routing-key rate limit.

Retries belong to the store-backed outbox (the job runner), not to this client: a call
either succeeds (HTTP 202) or raises ``EventsApiError`` saying whether a retry can help.
The call goes through the app's shared ``aiohttp`` session with a timeout, verified
against ``pagerduty.ca_file`` when one is set. Why not the ``pagerduty`` SDK here:
see docs/pagerduty.md ("Client choice").
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from pydantic import SecretStr

from bot.errors import UpstreamError
from bot.upstream.http import HttpError, HttpResponse, request

log = logging.getLogger(__name__)


class EventsApiError(UpstreamError):
    """An event was not accepted. ``status`` is None when PagerDuty could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        retry_after: float | None = None,
        errors: Sequence[str] = (),
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.errors = list(errors)
        super().__init__(message)

    @property
    def transient(self) -> bool:
        """Throttled, a server error or unreachable: the same event may succeed later."""
        return self.status is None or self.status == 429 or self.status >= 500


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify PagerDuty's certificate against ``ca_file``, or the system CAs when None."""
    return ssl.create_default_context(cafile=ca_file)


class EventsClient:
    """Sends Events API v2 events (trigger, acknowledge, resolve) for one routing key."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        url: str,
        routing_key: SecretStr,
        *,
        timeout: float,
        ssl_ctx: ssl.SSLContext,
    ) -> None:
        self._session = session
        self.url = url
        self._routing_key = routing_key
        self.timeout = timeout
        self._ssl = ssl_ctx

    async def send(self, event: Mapping[str, Any]) -> str:
        """POST one event; return the dedup key PagerDuty answered with."""
        body = {"routing_key": self._routing_key.get_secret_value(), **event}
        try:
            resp = await request(
                self._session(),
                "POST",
                self.url,
                json=body,
                timeout=self.timeout,
                retries=0,
                ssl=self._ssl,
            )
        except HttpError as exc:
            raise EventsApiError(f"Events API unreachable: {exc}", status=None) from None
        answer = _json_object(resp)
        if 200 <= resp.status < 300:
            return str(answer.get("dedup_key") or event.get("dedup_key") or "")
        errors = [str(e) for e in answer.get("errors") or [] if e]
        detail = "; ".join(errors) or str(answer.get("message") or resp.text[:300])
        raise EventsApiError(
            f"Events API answered HTTP {resp.status}: {detail}",
            status=resp.status,
            retry_after=_retry_after(resp.headers) if resp.status == 429 else None,
            errors=errors,
        )


def _json_object(resp: HttpResponse) -> dict[str, Any]:
    try:
        value = resp.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value <= 3600 else None


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per bucket (a routing key).

    A caller beyond the limit gets a reserved slot and the delay until it; coming back
    with the same ``ticket`` (the job's key) claims that slot, so a queued event waits
    once instead of racing every other queued event each time a slot frees. Memory
    only: after a restart the window starts empty, which PagerDuty's own 429 backs up.
    """

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._slots: dict[str, deque[float]] = {}
        self._reserved: dict[tuple[str, str], float] = {}

    def acquire(self, bucket: str, ticket: str, now: float) -> float:
        """0 when the caller may send now (the slot is taken), else seconds to wait."""
        slots = self._slots.setdefault(bucket, deque())
        while slots and slots[0] <= now - self.window:
            slots.popleft()
        held = self._reserved.pop((bucket, ticket), None)
        if held is not None:
            if held <= now:
                return 0.0
            self._reserved[(bucket, ticket)] = held
            return held - now
        at = now if len(slots) < self.limit else max(now, slots[-self.limit] + self.window)
        slots.append(at)
        if at <= now:
            return 0.0
        self._forget_stale(now)
        self._reserved[(bucket, ticket)] = at
        return at - now

    def _forget_stale(self, now: float) -> None:
        """Drop reservations whose holder never came back (its job failed or was removed)."""
        stale = [key for key, at in self._reserved.items() if at < now - self.window]
        for key in stale:
            del self._reserved[key]
