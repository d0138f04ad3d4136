"""The silences alertpilot creates for incidents: recorded in one place, expired in one.

Every feature that creates an Alertmanager silence for an incident (the Slack Silence
button and ``silence`` command, PagerDuty's ``ack_silences``, remediation ``silence``
steps) records it through this module in ``incident.data["silences"]``, a list this
module owns (``SilenceRecord``, ``bot.records.silences``). A record is appended inside
``store.change_incident``: the list is read and extended in the transaction that writes
it, so no writer loses another's record::

    {"id", "source": "slack" | "console" | "pagerduty" | "remediation", "expire_on_resolve",
     "created_at", "expired_at", and what the source adds: by, url, until, matchers, step}

The Slack and PagerDuty silences are one per firing alert of the incident, each checked
with Alertmanager first (``bot.silences.scope``); the silences one request made are
recorded together (``record_all``), each a record of its own, expired on its own.

One timeline subscriber, ``silences`` (``incident.resolved`` only), expires every record
with ``expire_on_resolve`` and no ``expired_at``, each exactly once: once Alertmanager
has expired it (an already deleted silence counts), its ``expired_at`` and a timeline
event are written together, if no one marked it first, and a marked record is never
asked again. Alertmanager unreachable -> RetryLater. A silence recorded on an incident
that is already resolved (it resolved while the silence was being made) gets the same
job at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from bot.core.clock import Clock
from bot.core.incidents import Event, EventKind, Incident, Status
from bot.errors import RetryLater
from bot.records.silences import SilenceRecord, silence_of, silences_of, stored_silences
from bot.runtime.jobs import JobHandlers
from bot.silences.scope import SilenceRefused, silences_for
from bot.store.base import IncidentChange, Job, NewEvent, NewJob, Store
from bot.upstream.alertmanager import AlertmanagerClient, AlertmanagerError

log = logging.getLogger(__name__)

KIND = "silences"
EXPIRED = "silence_expired"
ACTOR = "alertpilot"

Source = Literal["slack", "console", "pagerduty", "remediation"]
_WHAT: Mapping[str, str] = {
    "slack": "the Slack silence",
    "console": "the console silence",
    "pagerduty": "the acknowledgement silence",
    "remediation": "the remediation silence",
}


@dataclass(frozen=True)
class NewSilence:
    """A silence just created in Alertmanager, to record on its incident."""

    id: str
    source: Source
    expire_on_resolve: bool
    by: str = ""  # who asked for it (shown on the Slack message)
    url: str = ""  # the silence in Alertmanager's UI
    until: str = ""  # when it ends by itself, for people
    matchers: Sequence[str] = ()
    step: str = ""  # the remediation step that made it

    def record(self, now: float) -> SilenceRecord:
        extras = {"by": self.by, "url": self.url, "until": self.until, "step": self.step}
        given: dict[str, object] = {key: value for key, value in extras.items() if value}
        if self.matchers:
            given["matchers"] = list(self.matchers)
        return SilenceRecord.model_validate(
            {
                "id": self.id,
                "source": self.source,
                "expire_on_resolve": self.expire_on_resolve,
                "created_at": now,
                "expired_at": None,
                **given,
            }
        )


def new_silence_url(incident: Incident, alertmanager_url: str) -> str | None:
    """Alertmanager's new-silence page prefilled with what the Silence button would silence:
    the incident's firing alert, every label matched for equality (``bot.silences.scope``),
    on ``alertmanager_url`` (the caller's choice: the group's external URL when its host
    is allowed, the configured Alertmanager otherwise).

    None when there is no URL, or not exactly one firing alert: one page makes one silence,
    and no single silence selects several alerts and nothing else (the button makes one per
    alert). Nor when a label cannot be a matcher, since leaving it out would widen the
    silence.
    """
    base = alertmanager_url.strip().rstrip("/")
    try:
        silences = silences_for(incident)
    except SilenceRefused:
        return None
    if not base or len(silences) != 1:
        return None
    text = "{" + ",".join(str(m) for m in silences[0]) + "}"
    return f"{base}/#/silences/new?filter={quote(text, safe='')}"


def added(incident: Incident, silence: NewSilence, now: float) -> IncidentChange:
    """Append ``silence`` to the incident's records as they are now: call it inside
    ``store.change_incident`` (alone, or merged into the caller's own change).

    A record with the same id is not added twice; on a resolved incident the change
    carries the expiry job.
    """
    return added_all(incident, [silence], now)


def added_all(incident: Incident, silences: Sequence[NewSilence], now: float) -> IncidentChange:
    """:func:`added` for several silences made by one request (one per alert): all of
    them, or those not recorded yet, in one change. Empty when every one is recorded."""
    known = {r.id for r in silences_of(incident)}
    new: list[NewSilence] = []
    for silence in silences:
        if silence.id not in known:
            known.add(silence.id)
            new.append(silence)
    if not new:
        return IncidentChange()
    jobs = [
        NewJob(KIND, f"{KIND}:late:{incident.id}:{s.id}", now, {"kind": EventKind.RESOLVED.value})
        for s in new
        if s.expire_on_resolve and incident.status is Status.RESOLVED
    ]
    data = {"silences": [*stored_silences(incident), *(s.record(now).dump() for s in new)]}
    return IncidentChange(data=data, jobs=jobs)


def _expired_event(record: SilenceRecord) -> NewEvent:
    silence_id, source = record.id, record.source
    data: dict[str, Any] = {"source": source, "state": EXPIRED, "silence_id": silence_id}
    if source == "remediation":
        step = record.step
        return NewEvent(
            actor=ACTOR,
            kind=EventKind.REMEDIATION,
            message=f"{step}: silence {silence_id} expired: the incident resolved",
            data={**data, "step": step},
        )
    what = _WHAT.get(source, "silence")
    return NewEvent(
        actor=ACTOR,
        kind=EventKind.NOTE,
        message=f"expired {what} {silence_id}: the incident resolved",
        data=data,
    )


class SilenceService:
    """Records silences on incidents and, as the ``silences`` subscriber, expires them."""

    kind = KIND

    def __init__(
        self, store: Store, clock: Clock, alertmanager: Callable[[], AlertmanagerClient | None]
    ) -> None:
        self.store = store
        self.clock = clock
        self.alertmanager = alertmanager

    def register(self, handlers: JobHandlers) -> None:
        handlers.register(KIND, self.on_resolved, subscribe=True, events=[EventKind.RESOLVED])

    async def record(
        self, incident_id: int, silence: NewSilence, *, events: Sequence[NewEvent] = ()
    ) -> list[Event]:
        """Append the silence to the incident's records, with ``events``, in one transaction."""
        return await self.record_all(incident_id, [silence], events=events)

    async def record_all(
        self, incident_id: int, silences: Sequence[NewSilence], *, events: Sequence[NewEvent] = ()
    ) -> list[Event]:
        """Append the silences one request made (one per alert) and ``events`` to the
        incident, in one transaction; nothing when all of them are recorded already."""
        now = self.clock.now()

        def change(incident: Incident) -> IncidentChange:
            made = added_all(incident, silences, now)
            if not made.data:
                return made  # recorded before: a retry
            return IncidentChange(data=made.data, events=events, jobs=made.jobs)

        return await self.store.change_incident(incident_id, change, now=now)

    async def on_resolved(self, job: Job) -> None:
        """The ``silences`` job: expire each silence due on resolve, once."""
        if job.incident_id is None or job.payload.get("kind") != EventKind.RESOLVED:
            return
        incident = await self.store.get_incident(job.incident_id, timeline=False)
        due = [r for r in silences_of(incident) if r.due_on_resolve]
        if not due:
            return
        client = self.alertmanager()
        if client is None:
            raise RetryLater("no Alertmanager client yet")
        for record in due:
            silence_id = record.id
            try:
                await client.expire_silence(silence_id)
            except AlertmanagerError as exc:
                raise RetryLater(f"expiring silence {silence_id}: {exc}") from None
            if await self._mark(incident.id, silence_id):
                log.info("incident #%d: silence %s expired on resolve", incident.id, silence_id)

    async def _mark(self, incident_id: int, silence_id: str) -> bool:
        now = self.clock.now()

        def change(incident: Incident) -> IncidentChange:
            stored = stored_silences(incident)
            for index, entry in enumerate(stored):
                record = silence_of(entry, incident.id)
                if record is not None and record.active and record.id == silence_id:
                    stored[index] = record.model_copy(update={"expired_at": now}).dump()
                    return IncidentChange(
                        data={"silences": stored}, events=[_expired_event(record)]
                    )
            return IncidentChange()  # marked meanwhile

        return bool(await self.store.change_incident(incident_id, change, now=now))
