"""``pagerduty.ack_silences``: once someone acknowledges, silence the alert group until
the incident resolves, so Alertmanager stops re-notifying while they work.

A silence on the incident's group labels (equality matchers), created on the first
acknowledgement from anywhere (Slack, PagerDuty, the API) by a ``pagerduty.silence``
job (an Alertmanager outage retries it without holding up pages), and recorded through
the silence service (``bot.silences``) as ``{"id", "source": "pagerduty",
"expire_on_resolve": true, ...}``. The service's resolve subscriber expires it;
``ack_silence_duration`` bounds it should the resolve never come.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from bot.alertmanager import AlertmanagerClient, AlertmanagerError
from bot.errors import RetryLater
from bot.incidents import EventKind, Incident, Status
from bot.matchers import Matcher, MatcherError, MatchOp
from bot.silences import NewSilence, SilenceService, Source, is_active, silences_of
from bot.store.base import Job, NewEvent, Store

log = logging.getLogger(__name__)

KIND = "pagerduty.silence"
SOURCE: Source = "pagerduty"


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


def _ours_active(record: object) -> bool:
    return is_active(record) and isinstance(record, Mapping) and record.get("source") == SOURCE


class AckSilencer:
    kind = KIND

    def __init__(
        self,
        store: Store,
        alertmanager: Callable[[], AlertmanagerClient],
        silences: SilenceService,
        *,
        duration: float,
    ) -> None:
        self.store = store
        self.alertmanager = alertmanager
        self.silences = silences
        self.duration = duration

    async def __call__(self, job: Job) -> None:
        if job.incident_id is None or job.payload.get("action", "create") != "create":
            return  # an "expire" job queued before the silence service took that over
        await self._create(job.incident_id, str(job.payload.get("actor") or "someone"))

    async def _create(self, incident_id: int, actor: str) -> None:
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED or any(map(_ours_active, silences_of(incident))):
            return
        matchers = matchers_for(incident)
        if not matchers:
            return
        client = self.alertmanager()
        try:
            silence_id = await client.create_silence(
                matchers,
                duration=self.duration,
                created_by="alertpilot",
                comment=f"incident #{incident_id} acknowledged by {actor}; "
                "expires when the incident resolves",
                now=datetime.now(UTC),
            )
        except AlertmanagerError as exc:
            raise RetryLater(f"ack silence: {exc}") from None
        shown = ", ".join(str(m) for m in matchers)
        note = NewEvent(
            actor="alertpilot",
            kind=EventKind.NOTE,
            message=f"silenced {{{shown}}} in Alertmanager until the incident resolves",
            data={"source": SOURCE, "silence_id": silence_id},
        )
        record = NewSilence(
            id=silence_id,
            source=SOURCE,
            expire_on_resolve=True,
            by=actor,
            url=client.silence_url(silence_id),
            matchers=[str(m) for m in matchers],
        )
        await self.silences.record(incident_id, record, events=[note])
