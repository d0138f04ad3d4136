"""``pagerduty.ack_silences``: once someone acknowledges, silence the incident's alerts
until the incident resolves, so Alertmanager stops re-notifying while they work.

One silence per firing alert, on its whole label set (``bot.silences.scope``: never the
group labels, which can reach alerts outside the incident), created on the first
acknowledgement from anywhere (Slack, PagerDuty, the API) by a ``pagerduty.silence`` job
(an Alertmanager outage retries it without holding up pages) after Alertmanager said they
match no alert outside the incident; otherwise nothing is silenced and the refusal is a
note on the timeline. Each is recorded through the silence service (``bot.silences.service``) as
``{"id", "source": "pagerduty", "expire_on_resolve": true, "matchers", ...}``; a later
acknowledgement silences only the firing alerts no such record covers yet. The service's
resolve subscriber expires them; ``ack_silence_duration`` bounds them should the resolve
never come.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bot.core.incidents import EventKind, Incident, Status
from bot.errors import RetryLater
from bot.records.silences import silences_of
from bot.silences.scope import (
    AlertSilence,
    SilenceRefused,
    as_labels,
    check,
    describe,
    silences_for,
)
from bot.silences.service import NewSilence, SilenceService, Source
from bot.store.base import Job, NewEvent, Store
from bot.upstream.alertmanager import AlertmanagerClient, AlertmanagerError

log = logging.getLogger(__name__)

KIND = "pagerduty.silence"
SOURCE: Source = "pagerduty"


def to_silence(incident: Incident) -> list[AlertSilence]:
    """The incident's firing alerts that no active acknowledgement silence covers yet
    (same matchers), each as the matchers of its silence. Raises SilenceRefused."""
    covered = {
        tuple(record.matchers)
        for record in silences_of(incident)
        if record.active and record.source == SOURCE
    }
    return [s for s in silences_for(incident) if tuple(str(m) for m in s) not in covered]


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
        if incident.status is Status.RESOLVED:
            return
        client = self.alertmanager()
        try:
            wanted = to_silence(incident)
            if not wanted:
                return  # silenced on an earlier acknowledgement
            await check(client, incident, wanted)
        except SilenceRefused as exc:
            await self._refused(incident, actor, str(exc))
            return
        except AlertmanagerError as exc:
            raise RetryLater(f"ack silence: {exc}") from None
        made: list[NewSilence] = []
        try:
            for matchers in wanted:
                silence_id = await client.create_silence(
                    matchers,
                    duration=self.duration,
                    created_by="alertpilot",
                    comment=f"incident #{incident_id} acknowledged by {actor}; "
                    "expires when the incident resolves",
                    now=datetime.now(UTC),
                )
                made.append(
                    NewSilence(
                        id=silence_id,
                        source=SOURCE,
                        expire_on_resolve=True,
                        by=actor,
                        url=client.silence_url(silence_id),
                        matchers=[str(m) for m in matchers],
                    )
                )
        except AlertmanagerError as exc:  # the retry makes only what is not recorded
            raise RetryLater(f"ack silence: {exc}") from None
        finally:
            if made:
                await self.silences.record_all(incident_id, made, events=[_note(made, wanted)])

    async def _refused(self, incident: Incident, actor: str, reason: str) -> None:
        log.warning("incident #%d: no ack silence: %s", incident.id, reason)
        await self.store.append_event(
            incident.id,
            actor="alertpilot",
            kind=EventKind.NOTE,
            message=f"not silenced on {actor}'s acknowledgement: {reason}",
            now=self.silences.clock.now(),
            data={"source": SOURCE, "refused": "silence"},
        )


def _note(made: list[NewSilence], wanted: list[AlertSilence]) -> NewEvent:
    if len(made) == 1:
        what = f"silenced {describe(as_labels(wanted[0]))} in Alertmanager"
    else:
        what = f"silenced {len(made)} alerts in Alertmanager, one silence each,"
    return NewEvent(
        actor="alertpilot",
        kind=EventKind.NOTE,
        message=f"{what} until the incident resolves",
        data={"source": SOURCE, "silence_ids": [s.id for s in made]},
    )
