"""Incident actions shared by every front door: Slack buttons and commands, PagerDuty
webhooks, the API and the CLI. Each records who did it and where, on the timeline;
notifiers react to the timeline events (so an ack in Slack reaches PagerDuty and an ack
in PagerDuty reaches Slack). Repeating an action that already holds changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bot.clock import Clock
from bot.incidents import EventKind, Incident, Status
from bot.store.base import Store

Source = Literal["slack", "pagerduty", "api", "cli", "alertpilot"]


class IncidentActions:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def acknowledge(self, incident_id: int, *, actor: str, source: Source) -> Incident:
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.ACKNOWLEDGED:
            return incident
        return await self.store.transition(
            incident_id,
            Status.ACKNOWLEDGED,
            actor=actor,
            now=self.clock.now(),
            message=f"acknowledged by {actor} in {_where(source)}",
            data={"source": source},
        )

    async def unacknowledge(self, incident_id: int, *, actor: str, source: Source) -> Incident:
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is not Status.ACKNOWLEDGED:
            return incident
        return await self.store.transition(
            incident_id,
            Status.TRIGGERED,
            actor=actor,
            now=self.clock.now(),
            message=f"acknowledgement withdrawn by {actor} in {_where(source)}",
            data={"source": source},
        )

    async def resolve(
        self, incident_id: int, *, actor: str, source: Source, reason: str = ""
    ) -> Incident:
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED:
            return incident
        why = f": {reason}" if reason else ""
        return await self.store.transition(
            incident_id,
            Status.RESOLVED,
            actor=actor,
            now=self.clock.now(),
            message=f"resolved by {actor} in {_where(source)}{why}",
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
        "alertpilot": "alertpilot",
    }[source]
