"""The ``remediation.events`` subscriber: when an incident resolves, cancel the approvals
still pending. Every other event kind is ignored.

The silences remediation steps created with ``expire_on_resolve`` are expired by the
silence service's ``silences`` subscriber (``bot.silences.service``), like every other silence.
"""

from __future__ import annotations

from bot.core.incidents import EventKind
from bot.remediation.approvals import ApprovalDesk
from bot.store.base import Job


class ResolveHandler:
    def __init__(self, approvals: ApprovalDesk) -> None:
        self.approvals = approvals

    async def __call__(self, job: Job) -> None:
        if job.payload.get("kind") != EventKind.RESOLVED or job.incident_id is None:
            return
        await self.approvals.cancel_pending(job.incident_id)
