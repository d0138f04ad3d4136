"""Silences asked for in Slack: an Alertmanager silence matching the incident's group labels,
recorded through the silence service (``bot.silences``) with a note on the timeline.
"Until resolved" silences are expired by the service's ``silences`` subscriber when the
incident resolves; Alertmanager needs an end all the same, and it is no later than
``slack.max_silence``, so "until resolved" cannot outlast the cap a duration has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bot.alertmanager import AlertmanagerClient
from bot.clock import Clock
from bot.durations import format_duration
from bot.incidents import EventKind, Status, TransitionError
from bot.silences import NewSilence, SilenceService, group_matchers
from bot.store.base import NewEvent, Store

log = logging.getLogger(__name__)

UNTIL_RESOLVED = "resolved"
UNTIL_RESOLVED_LIMIT = 7 * 86400.0  # Alertmanager needs an end; resolving ends it sooner
MIN_SILENCE = 60.0


class Silencer:
    def __init__(
        self,
        store: Store,
        alertmanager: Callable[[], AlertmanagerClient],
        clock: Clock,
        silences: SilenceService,
        *,
        max_silence: float = UNTIL_RESOLVED_LIMIT,
    ) -> None:
        self.store = store
        self.alertmanager = alertmanager
        self.clock = clock
        self.silences = silences
        self.until_resolved_limit = min(UNTIL_RESOLVED_LIMIT, max_silence)

    async def silence(self, incident_id: int, choice: float | str, *, actor: str) -> str:
        """Silence the incident's alerts for ``choice`` seconds or until resolved; a summary."""
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED:
            raise TransitionError(f"incident #{incident_id} is resolved; nothing to silence")
        until_resolved = choice == UNTIL_RESOLVED
        seconds = self.until_resolved_limit if until_resolved else float(choice)
        matchers = group_matchers(incident)
        now = self.clock.now()
        am = self.alertmanager()
        silence_id = await am.create_silence(
            matchers,
            duration=seconds,
            created_by=actor,
            comment=f"alertpilot incident #{incident.id} ({incident.title}), silenced in Slack",
            now=datetime.fromtimestamp(now, UTC),
        )
        label = (
            f"until resolved or for {format_duration(seconds)} at most"
            if until_resolved
            else f"for {format_duration(seconds)}"
        )
        ends = datetime.fromtimestamp(now + seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
        note = NewEvent(
            actor=actor,
            kind=EventKind.NOTE,
            message=f"silenced {label} by {actor} in Slack (Alertmanager silence {silence_id})",
            data={"source": "slack", "silence_id": silence_id, "seconds": seconds},
        )
        record = NewSilence(
            id=silence_id,
            source="slack",
            expire_on_resolve=until_resolved,
            by=actor,
            url=am.silence_url(silence_id),
            until=ends,
            matchers=[str(m) for m in matchers],
        )
        await self.silences.record(incident_id, record, events=[note])
        return f"Silenced #{incident_id} {label} (silence {silence_id})"
