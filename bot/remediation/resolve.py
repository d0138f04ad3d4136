"""The ``remediation.events`` subscriber: when an incident resolves, clean up after it.

It expires the Alertmanager silences remediation steps created with
``expire_on_resolve`` (an already expired or deleted silence counts as expired) and
cancels approvals still pending. Every other event kind is ignored. A failure to reach
Alertmanager retries the job; silences already expired are not asked again.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.alertmanager import AlertmanagerError
from bot.errors import RetryLater
from bot.incidents import EventKind, Incident
from bot.remediation.approvals import ApprovalDesk
from bot.remediation.deps import Deps
from bot.remediation.records import ACTOR, silences_of
from bot.store.base import IncidentChange, Job, NewEvent

log = logging.getLogger(__name__)

SOURCE = "remediation"


def _to_expire(incident: Incident) -> list[dict[str, Any]]:
    return [
        item
        for item in silences_of(incident)
        if item.get("source") == SOURCE
        and item.get("expire_on_resolve")
        and not item.get("expired_at")
        and item.get("id")
    ]


class ResolveHandler:
    def __init__(self, deps: Deps, approvals: ApprovalDesk) -> None:
        self.deps = deps
        self.approvals = approvals

    async def __call__(self, job: Job) -> None:
        if job.payload.get("kind") != EventKind.RESOLVED or job.incident_id is None:
            return
        await self.approvals.cancel_pending(job.incident_id)
        incident = await self.deps.store.get_incident(job.incident_id, timeline=False)
        silences = _to_expire(incident)
        if not silences:
            return
        alertmanager = self.deps.connections().alertmanager
        if alertmanager is None:
            raise RetryLater("no Alertmanager client yet")
        for item in silences:
            silence_id = str(item["id"])
            try:
                await alertmanager.expire_silence(silence_id)
            except AlertmanagerError as exc:
                raise RetryLater(f"expiring silence {silence_id}: {exc}") from None
            await self._mark(job.incident_id, silence_id, str(item.get("step", "")))

    async def _mark(self, incident_id: int, silence_id: str, step: str) -> None:
        now = self.deps.clock.now()

        def apply(incident: Incident) -> IncidentChange:
            items = silences_of(incident)
            found = False
            for item in items:
                if item.get("id") == silence_id and item.get("source") == SOURCE:
                    found = found or not item.get("expired_at")
                    item["expired_at"] = item.get("expired_at") or now
            if not found:
                return IncidentChange()
            event = NewEvent(
                actor=ACTOR,
                kind=EventKind.REMEDIATION,
                message=f"{step}: silence {silence_id} expired: the incident resolved",
                data={"step": step, "state": "silence_expired", "silence_id": silence_id},
            )
            return IncidentChange(data={"silences": items}, events=[event])

        await self.deps.store.change_incident(incident_id, apply, now=now)
        log.info("incident #%d: silence %s expired on resolve", incident_id, silence_id)
