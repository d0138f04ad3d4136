"""Silences asked for in Slack: an Alertmanager silence matching the incident's group labels,
recorded in ``incident.data["silences"]`` and on the timeline. "Until resolved" silences
are expired by the ``slack.unsilence`` job when the incident resolves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.alertmanager import AlertmanagerClient, AlertmanagerError
from bot.clock import Clock
from bot.durations import format_duration
from bot.errors import RetryLater
from bot.incidents import EventKind, Status, TransitionError
from bot.matchers import Matcher, MatchOp
from bot.store.base import Job, Store

log = logging.getLogger(__name__)

UNTIL_RESOLVED = "resolved"
UNTIL_RESOLVED_LIMIT = 7 * 86400.0  # Alertmanager needs an end; resolving ends it sooner
MIN_SILENCE, MAX_SILENCE = 60.0, 30 * 86400.0


class Silencer:
    def __init__(
        self, store: Store, alertmanager: Callable[[], AlertmanagerClient], clock: Clock
    ) -> None:
        self.store = store
        self.alertmanager = alertmanager
        self.clock = clock
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, incident_id: int) -> asyncio.Lock:
        return self._locks.setdefault(incident_id, asyncio.Lock())

    async def silence(self, incident_id: int, choice: float | str, *, actor: str) -> str:
        """Silence the incident's alerts for ``choice`` seconds or until resolved; a summary."""
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED:
            raise TransitionError(f"incident #{incident_id} is resolved; nothing to silence")
        until_resolved = choice == UNTIL_RESOLVED
        seconds = UNTIL_RESOLVED_LIMIT if until_resolved else float(choice)
        labels = incident.group_labels or incident.common_labels
        matchers = [Matcher(name, MatchOp.EQ, value) for name, value in sorted(labels.items())]
        now = self.clock.now()
        am = self.alertmanager()
        silence_id = await am.create_silence(
            matchers,
            duration=seconds,
            created_by=actor,
            comment=f"alertpilot incident #{incident.id} ({incident.title}), silenced in Slack",
            now=datetime.fromtimestamp(now, UTC),
        )
        label = "until resolved" if until_resolved else f"for {format_duration(seconds)}"
        ends = datetime.fromtimestamp(now + seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
        record = {
            "id": silence_id,
            "url": am.silence_url(silence_id),
            "by": actor,
            "source": "slack",
            "created_at": now,
            "until": ends,
            "expire_on_resolve": until_resolved,
            "matchers": [str(m) for m in matchers],
        }
        async with self._lock(incident_id):  # the list is read, extended and written back
            latest = await self.store.get_incident(incident_id, timeline=False)
            current = latest.data.get("silences")
            records = [*(current if isinstance(current, list) else []), record]
            await self.store.update_incident(incident_id, now=now, data={"silences": records})
        await self.store.append_event(
            incident_id,
            actor=actor,
            kind=EventKind.NOTE,
            message=f"silenced {label} by {actor} in Slack (Alertmanager silence {silence_id})",
            now=now,
            data={"source": "slack", "silence_id": silence_id, "seconds": seconds},
        )
        return f"Silenced #{incident_id} {label} (silence {silence_id})"

    async def expire_on_resolve(self, job: Job) -> None:
        """The ``slack.unsilence`` job: expire this incident's until-resolved Slack silences."""
        if job.incident_id is None:
            return
        incident = await self.store.get_incident(job.incident_id, timeline=False)
        records = incident.data.get("silences")
        if not isinstance(records, list):
            return
        expired: list[str] = []
        updated: list[Any] = []
        for record in records:
            if _due(record):
                try:
                    await self.alertmanager().expire_silence(str(record["id"]))
                except AlertmanagerError as exc:
                    raise RetryLater(f"expire silence {record['id']}: {exc}") from None
                record = {**record, "expired_at": self.clock.now()}
                expired.append(str(record["id"]))
            updated.append(record)
        if not expired:
            return
        now = self.clock.now()
        async with self._lock(incident.id):
            latest = await self.store.get_incident(incident.id, timeline=False)
            current = latest.data.get("silences")
            done = {r["id"]: r for r in updated if isinstance(r, Mapping) and r.get("expired_at")}
            merged = [
                done.get(r.get("id"), r) if isinstance(r, Mapping) else r
                for r in (current if isinstance(current, list) else updated)
            ]
            await self.store.update_incident(incident.id, now=now, data={"silences": merged})
        await self.store.append_event(
            incident.id,
            actor="alertpilot",
            kind=EventKind.NOTE,
            message=f"expired silence(s) {', '.join(expired)}: the incident is resolved",
            now=now,
            data={"source": "slack", "silences": expired},
        )


def _due(record: Any) -> bool:
    return (
        isinstance(record, Mapping)
        and record.get("source") == "slack"
        and bool(record.get("expire_on_resolve"))
        and not record.get("expired_at")
        and bool(record.get("id"))
    )
