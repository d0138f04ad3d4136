"""Incident actions shared by every front door: Slack buttons and commands, PagerDuty
webhooks, the console, the API and the CLI. Each records who did it and where, on the timeline;
notifiers react to the timeline events (so an ack in Slack reaches PagerDuty and an ack
in PagerDuty reaches Slack). Repeating an action that already holds changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bot.core.clock import Clock
from bot.core.incidents import EventKind, Incident, Status
from bot.store.base import Store

Source = Literal["slack", "pagerduty", "api", "cli", "console", "alertpilot"]


class IncidentActions:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def acknowledge(self, incident_id: int, *, actor: str, source: Source) -> Incident:
        return await self._move(
            incident_id,
            Status.ACKNOWLEDGED,
            already={Status.ACKNOWLEDGED},
            source=source,
            actor=actor,
            message=f"acknowledged by {actor} in {_where(source)}",
        )

    async def unacknowledge(self, incident_id: int, *, actor: str, source: Source) -> Incident:
        return await self._move(
            incident_id,
            Status.TRIGGERED,
            already={Status.TRIGGERED, Status.RESOLVED},
            source=source,
            actor=actor,
            message=f"acknowledgement withdrawn by {actor} in {_where(source)}",
        )

    async def resolve(
        self, incident_id: int, *, actor: str, source: Source, reason: str = ""
    ) -> Incident:
        why = f": {reason}" if reason else ""
        return await self._move(
            incident_id,
            Status.RESOLVED,
            already={Status.RESOLVED},
            source=source,
            actor=actor,
            message=f"resolved by {actor} in {_where(source)}{why}",
        )

    async def _move(
        self,
        incident_id: int,
        new: Status,
        *,
        already: set[Status],
        source: Source,
        actor: str,
        message: str,
    ) -> Incident:
        """Change status unless the incident is in one of ``already`` (then: no-op)."""
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status in already:
            return incident
        return await self.store.transition(
            incident_id,
            new,
            actor=actor,
            now=self.clock.now(),
            message=message,
            data={"source": source},
        )

    async def escalate(
        self,
        incident_id: int,
        *,
        actor: str,
        source: Source,
        reason: str,
        data: Mapping[str, Any] | None = None,
    ) -> Incident:
        """Ask for a page now (the Escalate button, a failed remediation verify)."""
        incident = await self.store.get_incident(incident_id, timeline=False)
        await self.store.append_event(
            incident_id,
            actor=actor,
            kind=EventKind.ESCALATED,
            now=self.clock.now(),
            message=f"escalated by {actor}: {reason}",
            data={"source": source, "reason": reason, **(data or {})},
        )
        return incident

    async def note(self, incident_id: int, *, actor: str, source: Source, text: str) -> None:
        await self.store.append_event(
            incident_id,
            actor=actor,
            kind=EventKind.NOTE,
            message=text,
            now=self.clock.now(),
            data={"source": source},
        )


def _where(source: Source) -> str:
    return {
        "slack": "Slack",
        "pagerduty": "PagerDuty",
        "api": "the API",
        "cli": "the CLI",
        "console": "the console",
        "alertpilot": "alertpilot",
    }[source]
