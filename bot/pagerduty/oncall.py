"""Who is on call, from PagerDuty's REST API ``GET /oncalls``: paginated, cached briefly.

The ``pagerduty`` SDK's ``RestApiV2Client`` does the pagination and auth; it is
synchronous, so each lookup runs in a worker thread (``asyncio.to_thread``) with a
timeout and one retry (see ``bot.pagerduty.rest``). Answers are cached per
schedule for ``oncall_cache_ttl``; concurrent lookups of one schedule share a single
request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pagerduty

from bot.core.clock import Clock
from bot.errors import UpstreamError
from bot.pagerduty.rest import RestSettings, failure

log = logging.getLogger(__name__)

PAGE_SIZE = 100


class OnCallUnavailable(UpstreamError):
    """PagerDuty could not answer (down, throttled, wrong token)."""


@dataclass(frozen=True)
class Ref:
    """A PagerDuty reference (user, schedule, escalation policy), as the REST API names it."""

    id: str | None
    summary: str | None
    html_url: str | None = None


@dataclass(frozen=True)
class OnCall:
    """One on-call shift, shaped like an entry of PagerDuty's ``GET /oncalls``."""

    user: Ref
    escalation_policy: Ref | None
    escalation_level: int | None
    schedule: Ref | None
    start: str | None
    end: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ref(value: Any) -> Ref | None:
    if not isinstance(value, Mapping):
        return None

    def text(key: str) -> str | None:
        item = value.get(key)
        return item if isinstance(item, str) else None

    return Ref(id=text("id"), summary=text("summary") or text("name"), html_url=text("html_url"))


def parse_oncall(entry: Mapping[str, Any]) -> OnCall:
    level = entry.get("escalation_level")
    return OnCall(
        user=_ref(entry.get("user")) or Ref(id=None, summary=None),
        escalation_policy=_ref(entry.get("escalation_policy")),
        escalation_level=level if isinstance(level, int) else None,
        schedule=_ref(entry.get("schedule")),
        start=entry.get("start") if isinstance(entry.get("start"), str) else None,
        end=entry.get("end") if isinstance(entry.get("end"), str) else None,
    )


def _order(entry: OnCall) -> tuple[int, str, str]:
    schedule = entry.schedule.summary if entry.schedule else None
    return entry.escalation_level or 0, schedule or "", entry.user.summary or ""


class OnCallDirectory:
    def __init__(self, rest: RestSettings, *, clock: Clock, ttl: float) -> None:
        self.rest = rest
        self.clock = clock
        self.ttl = ttl
        self._cache: dict[str, tuple[float, list[OnCall]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def oncall(self, schedule: str | None = None) -> list[OnCall]:
        """Everyone on call now (for ``schedule`` only, if given), by level then name."""
        key = schedule or ""
        if (hit := self._fresh(key)) is not None:
            return hit
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (hit := self._fresh(key)) is not None:
                return hit
            entries = await asyncio.to_thread(self._fetch, schedule)
            entries.sort(key=_order)
            self._cache[key] = (self.clock.monotonic() + self.ttl, entries)
            return list(entries)

    def _fresh(self, key: str) -> list[OnCall] | None:
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self.clock.monotonic():
            return list(cached[1])
        return None

    def _fetch(self, schedule: str | None) -> list[OnCall]:
        params: dict[str, Any] = {"earliest": "true"}
        if schedule:
            params["schedule_ids"] = [schedule]
        try:
            with self.rest.client() as client:
                return [
                    parse_oncall(item)
                    for item in client.iter_all("oncalls", params=params, page_size=PAGE_SIZE)
                    if isinstance(item, Mapping)
                ]
        except pagerduty.Error as exc:
            reason = failure(exc)
            log.warning("PagerDuty on-call lookup failed: %s", reason)
            raise OnCallUnavailable(f"PagerDuty on-call list unavailable ({reason})") from None
