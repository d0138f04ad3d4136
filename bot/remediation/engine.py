"""``RemediationEngine`` (``keys.REMEDIATION``): plan, approve, reject, pending, describe.

The pipeline calls ``plan`` after diagnostics; Slack, the API and the CLI call
``approve``/``reject``; ``alertpilot simulate`` calls ``describe``. Steps run in jobs
(``remediation.run``), never inside the caller; see ``deps`` for the job kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.core.clock import Clock
from bot.core.incidents import EventKind, Incident
from bot.core.transitions import IncidentActions, Source
from bot.playbook.model import Playbook
from bot.remediation.actions import ActionRegistry, Connections
from bot.remediation.approvals import ApprovalDesk, Decision
from bot.remediation.deps import EVENTS, EXPIRE, RUN, VERIFY, Deps
from bot.remediation.planner import Planner
from bot.remediation.records import PendingApproval, StepPreview, StepRecord
from bot.remediation.resolve import ResolveHandler
from bot.remediation.runner import StepRunner
from bot.remediation.verify import Verifier
from bot.runtime.jobs import JobHandlers
from bot.settings import RemediationSettings
from bot.store.base import Store


class RemediationEngine:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: RemediationSettings,
        *,
        actions: IncidentActions,
        registry: ActionRegistry | None = None,
        connections: Callable[[], Connections] = Connections,
    ) -> None:
        self.deps = Deps(
            store,
            clock,
            settings,
            actions,
            registry or ActionRegistry.from_settings(settings),
            connections,
        )
        self._planner = Planner(self.deps)
        self._approvals = ApprovalDesk(self.deps)
        self.run_job = StepRunner(self.deps)
        self.verify_job = Verifier(self.deps)
        self.expire_job = self._approvals.expire_job
        self.on_event = ResolveHandler(self._approvals)

    def register(self, handlers: JobHandlers) -> None:
        handlers.register(RUN, self.run_job)
        handlers.register(VERIFY, self.verify_job)
        handlers.register(EXPIRE, self.expire_job)
        handlers.register(EVENTS, self.on_event, subscribe=True, events=[EventKind.RESOLVED])

    async def plan(
        self, incident_id: int, playbooks: Sequence[Playbook] | None = None
    ) -> list[StepRecord]:
        """Propose the remediations of the incident's playbooks (default: those the pipeline
        matched); returns the steps planned now (none when planned before)."""
        return await self._planner.plan(incident_id, playbooks)

    async def approve(
        self, incident_id: int, step: str, *, actor: str, source: Source
    ) -> StepRecord:
        """Approve a pending step; its run is queued. Raises NotFound or ApprovalConflict."""
        return await self._approvals.decide(
            incident_id, step, Decision.APPROVE, actor=actor, source=source
        )

    async def reject(
        self, incident_id: int, step: str, *, actor: str, source: Source, reason: str = ""
    ) -> StepRecord:
        """Reject a pending step. Raises NotFound or ApprovalConflict."""
        return await self._approvals.decide(
            incident_id, step, Decision.REJECT, actor=actor, source=source, reason=reason
        )

    async def pending(self, incident_id: int) -> list[PendingApproval]:
        """Steps of the incident awaiting approval, not yet expired."""
        return await self._approvals.pending(incident_id)

    async def describe(self, playbook: Playbook, incident: Incident) -> list[StepPreview]:
        """What each step would do now and which guard would stop it. No side effects."""
        return await self._planner.describe(playbook, incident)
