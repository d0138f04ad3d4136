"""``pagerduty.ack_silences``: once someone acknowledges, silence the alert group until
the incident resolves, so Alertmanager stops re-notifying while they work.

A silence on the incident's group labels (equality matchers), created on the first
acknowledgement from anywhere (Slack, PagerDuty, the API) and expired when the incident
resolves; ``ack_silence_duration`` bounds it should the resolve never come. Each one is
listed in ``incident.data["silences"]`` as
``{"id", "expire_on_resolve": true, "source": "pagerduty", ...}``; an entry that already
carries ``expired_at`` (whoever expired it) is left alone.

Both steps are ``pagerduty.silence`` jobs: jobs of one kind for one incident run in
order, so an expiry never overtakes the creation it undoes, and an Alertmanager outage
retries here without holding up pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.alertmanager import AlertmanagerClient, AlertmanagerError
from bot.clock import Clock
from bot.errors import RetryLater
from bot.incidents import EventKind, Incident, Status
from bot.matchers import Matcher, MatcherError, MatchOp
from bot.store.base import IncidentChange, Job, NewEvent, Store

log = logging.getLogger(__name__)

KIND = "pagerduty.silence"
SOURCE = "pagerduty"


def matchers_for(incident: Incident) -> list[Matcher]:
    """The group's labels, or the alert name when the group has none.

    Empty when a label cannot be a matcher: a silence without it would be wider than the
    group, so there is none.
    """
    labels: Mapping[str, str] = incident.group_labels or {
        k: v for k, v in incident.common_labels.items() if k == "alertname"
    }
    try:
        return [Matcher(name, MatchOp.EQ, value) for name, value in sorted(labels.items())]
    except MatcherError as exc:
        log.warning("incident #%d: no ack silence: %s", incident.id, exc)
        return []


def _entries(incident: Incident) -> list[Any]:
    raw = incident.data.get("silences")
    return list(raw) if isinstance(raw, list) else []


def _ours_active(entry: Any) -> bool:
    return (
        isinstance(entry, Mapping)
        and entry.get("source") == SOURCE
        and bool(entry.get("id"))
        and not entry.get("expired_at")
        and not entry.get("expired")
    )


class AckSilencer:
    kind = KIND

    def __init__(
        self,
        store: Store,
        clock: Clock,
        alertmanager: Callable[[], AlertmanagerClient],
        *,
        duration: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.alertmanager = alertmanager
        self.duration = duration

    async def __call__(self, job: Job) -> None:
        if job.incident_id is None:
            return
        if job.payload.get("action") == "expire":
            await self._expire(job.incident_id)
        else:
            await self._create(job.incident_id, str(job.payload.get("actor") or "someone"))

    async def _create(self, incident_id: int, actor: str) -> None:
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED or any(map(_ours_active, _entries(incident))):
            return
        matchers = matchers_for(incident)
        if not matchers:
            return
        try:
            silence_id = await self.alertmanager().create_silence(
                matchers,
                duration=self.duration,
                created_by="alertpilot",
                comment=f"incident #{incident_id} acknowledged by {actor}; "
                "expires when the incident resolves",
                now=datetime.now(UTC),
            )
        except AlertmanagerError as exc:
            raise RetryLater(f"ack silence: {exc}") from None
        now = self.clock.now()
        entry = {
            "id": silence_id,
            "expire_on_resolve": True,
            "source": SOURCE,
            "matchers": [str(m) for m in matchers],
            "created_at": now,
            "created_by": actor,
        }
        shown = ", ".join(str(m) for m in matchers)
        note = NewEvent(
            actor="alertpilot",
            kind=EventKind.NOTE,
            message=f"silenced {{{shown}}} in Alertmanager until the incident resolves",
            data={"source": SOURCE, "silence_id": silence_id},
        )

        def record(fresh: Incident) -> IncidentChange:  # the shared list as it is now
            return IncidentChange(data={"silences": [*_entries(fresh), entry]}, events=[note])

        await self.store.change_incident(incident_id, record, now=now)

    async def _expire(self, incident_id: int) -> None:
        incident = await self.store.get_incident(incident_id, timeline=False)
        ids = [str(e["id"]) for e in _entries(incident) if _ours_active(e)]
        if not ids:
            return
        client = self.alertmanager()
        for silence_id in ids:
            try:
                await client.expire_silence(silence_id)
            except AlertmanagerError as exc:
                raise RetryLater(f"expire ack silence {silence_id}: {exc}") from None
        now = self.clock.now()
        note = NewEvent(
            actor="alertpilot",
            kind=EventKind.NOTE,
            message=f"expired {len(ids)} acknowledgement silence(s): the incident resolved",
            data={"source": SOURCE, "silence_ids": ids},
        )

        def mark(fresh: Incident) -> IncidentChange:
            entries = [
                {**e, "expired_at": now} if _ours_active(e) and str(e["id"]) in ids else e
                for e in _entries(fresh)
            ]
            return IncidentChange(data={"silences": entries}, events=[note])

        await self.store.change_incident(incident_id, mark, now=now)
