"""Outbound HTTP with a timeout on every call and bounded retries with backoff.

One ``aiohttp.ClientSession`` per app (opened and closed in ``cleanup_ctx``) is shared
by the Prometheus and Alertmanager clients and the HTTP steps. A call given the
upstream's circuit breaker (``bot.upstream.breaker``) fails at once while it is open, and every
attempt tells it how it went: no answer or a 5xx is a failure, any other answer a success.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from bot.errors import UpstreamError
from bot.upstream.breaker import CircuitBreaker

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class HttpError(UpstreamError):
    """An outbound call failed; ``status`` is None for network errors and timeouts.

    ``cause`` says which: ``timeout`` (no answer in time) or ``unreachable`` (refused,
    reset, its breaker open)."""

    def __init__(
        self, message: str, *, status: int | None = None, body: str = "", timed_out: bool = False
    ) -> None:
        self.status = status
        self.body = body
        self.cause = "timeout" if timed_out else "unreachable"
        super().__init__(message)


class CircuitOpen(HttpError):
    """The upstream's breaker is open: the call was not made."""

    def __init__(self, url: str, retry_in: float) -> None:
        self.retry_in = retry_in
        super().__init__(
            f"{_safe(url)}: unreachable, not called (circuit open after repeated failures;"
            f" next try in {retry_in:.0f}s)"
        )


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]
    elapsed: float

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float,
    retries: int = 0,
    backoff: float = 0.5,
    max_body: int = 8 * 1024 * 1024,
    retry_statuses: frozenset[int] = RETRY_STATUSES,
    allow_redirects: bool = False,
    breaker: CircuitBreaker | None = None,
    encoded: bool = False,
    **kwargs: Any,
) -> HttpResponse:
    """Send a request; retry network errors and ``retry_statuses`` up to ``retries`` times.

    Returns the last response (whatever its status) or raises HttpError on a network
    failure that outlived its retries, ``CircuitOpen`` when ``breaker`` refuses an
    attempt. Redirects are not followed unless asked: a URL checked against an
    allowlist must be the URL that is called. ``encoded=True`` sends ``url`` exactly as
    given (already percent-encoded, and checked in that form): without it the client
    requotes the URL, decoding escapes such as ``%3B`` that were there on purpose.
    """
    target: str | URL = URL(url, encoded=True) if encoded else url
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        trial = breaker is not None and breaker.state != "closed"
        if breaker is not None and not breaker.allow():
            raise CircuitOpen(url, breaker.retry_in())
        started = loop.time()
        try:
            async with session.request(
                method,
                target,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=allow_redirects,
                **kwargs,
            ) as resp:
                body = await resp.content.read(max_body + 1)
                if len(body) > max_body:
                    raise HttpError(f"{method} {url}: answer larger than {max_body} bytes")
                result = HttpResponse(resp.status, body, dict(resp.headers), loop.time() - started)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if breaker is not None:
                breaker.failure()
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            if attempt >= retries:
                raise HttpError(
                    f"{method} {_safe(url)}: {reason}", timed_out=isinstance(exc, TimeoutError)
                ) from None
        except asyncio.CancelledError:  # the caller gave up (a deadline): no verdict
            if breaker is not None and trial:
                breaker.abandon()  # let a later call be the trial
            raise
        else:
            if breaker is not None:
                if result.status >= 500:
                    breaker.failure()
                else:
                    breaker.success()
            if result.status not in retry_statuses or attempt >= retries:
                return result
            reason = f"HTTP {result.status}"
        delay = backoff * 2**attempt * random.uniform(0.8, 1.2)
        log.info(
            "%s %s: %s, retry %d/%d in %.2fs",
            method,
            _safe(url),
            reason,
            attempt + 1,
            retries,
            delay,
        )
        attempt += 1
        await asyncio.sleep(delay)


def _safe(url: str) -> str:
    """The URL without credentials or query string, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
