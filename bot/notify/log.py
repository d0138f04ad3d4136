"""The notifier used when Slack is off: each timeline event becomes a log line.

The incident API (``GET /api/v1/incidents/{id}``) shows the same events with their data.
"""

from __future__ import annotations

import logging

from bot.store.base import Job, Store

log = logging.getLogger("alertpilot.incidents")


class LogNotifier:
    kind = "notify.log"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, job: Job) -> None:
        if job.incident_id is None:
            return
        event_id = int(job.payload["event_id"])
        incident = await self.store.get_incident(job.incident_id, timeline=False)
        events = await self.store.events(job.incident_id, after=event_id - 1)
        event = next((e for e in events if e.id == event_id), None)
        if event is None:
            return
        log.info(
            "incident #%d [%s %s] %s: %s — %s (by %s)",
            incident.id,
            incident.severity.value,
            incident.status.value,
            incident.title,
            event.kind,
            event.message,
            event.actor,
        )
