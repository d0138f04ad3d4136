"""Approvals: approve, reject, expire, cancel — each one atomic check-and-set on the incident.

Only a pending, unexpired approval on an unresolved incident can be decided; the first
decision wins. Approving queues the step's run job (keyed by incident, step and
attempt, so it runs once) in the same transaction; the HTTP request or CLI call that
approved returns at once. A late decision finds the approval expired (recorded then, if
its timer has not run yet) and is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from bot.core.incidents import EventKind, Incident, Status, TransitionError
from bot.core.transitions import Source
from bot.errors import NotFound, RetryLater
from bot.remediation.deps import Deps, run_job
from bot.remediation.records import (
    ApprovalRecord,
    ApprovalState,
    PendingApproval,
    StepRecord,
    StepState,
    approval_event,
    approvals_of,
    dump,
    step_event,
    steps_of,
)
from bot.store.base import Decided, IncidentChange, IncidentStore, Job, NewEvent, NewJob

log = logging.getLogger(__name__)


async def note_refused(
    store: IncidentStore,
    incident_id: int,
    *,
    actor: str,
    verb: str,
    step: str,
    source: Source,
    where: str,
    why: str,
    now: float,
) -> None:
    """On the timeline, without notifying anyone: ``actor`` tried to approve or reject
    ``step`` from ``where`` ("Slack", "the console") and was refused, and why."""
    await store.append_event(
        incident_id,
        actor=actor,
        kind=EventKind.NOTE,
        message=f"{actor} tried to {verb} {step!r} in {where}: refused ({why})",
        now=now,
        data={"source": source, "refused": verb, "step": step},
        notify=False,
    )


class ApprovalConflict(TransitionError):
    """The step is not awaiting approval (decided, expired, never asked, or resolved)."""


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    EXPIRE = "expire"
    CANCEL = "cancel"


_APPROVAL_STATE = {
    Decision.APPROVE: ApprovalState.APPROVED,
    Decision.REJECT: ApprovalState.REJECTED,
    Decision.EXPIRE: ApprovalState.EXPIRED,
    Decision.CANCEL: ApprovalState.CANCELLED,
}
_STEP_STATE = {
    Decision.APPROVE: StepState.APPROVED,
    Decision.REJECT: StepState.REJECTED,
    Decision.EXPIRE: StepState.EXPIRED,
    Decision.CANCEL: StepState.CANCELLED,
}


@dataclass(frozen=True)
class _Outcome:
    """What a decision did to the step, and why it was not the one asked for, if so."""

    record: StepRecord
    conflict: str = ""


class ApprovalDesk:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def decide(
        self,
        incident_id: int,
        step: str,
        decision: Decision,
        *,
        actor: str,
        source: Source,
        reason: str = "",
    ) -> StepRecord:
        """Record a person's decision; raise NotFound or ApprovalConflict."""
        now = self.deps.clock.now()

        def apply(incident: Incident) -> Decided[_Outcome]:
            conflict = ""
            steps, approvals = steps_of(incident), approvals_of(incident)
            record = steps.get(step)
            if record is None:
                known = ", ".join(sorted(steps)) or "none"
                raise NotFound(
                    f"incident #{incident.id} has no remediation step {step!r} (steps: {known})"
                )
            approval = approvals.get(step)
            if approval is None or approval.state is not ApprovalState.PENDING:
                raise ApprovalConflict(
                    f"step {step!r} of incident #{incident.id} is not awaiting approval "
                    f"(it is {record.state.value})"
                )
            final = decision
            if now >= approval.expires_at:
                final, conflict = Decision.EXPIRE, f"the approval of {step!r} expired"
            elif incident.status is Status.RESOLVED:
                final = Decision.CANCEL
                conflict = f"incident #{incident.id} is resolved: {step!r} will not run"
            if final in (Decision.APPROVE, Decision.REJECT):
                approval.actor, approval.source = actor, source
            change = self._close(incident, steps, approvals, step, final, now, reason)
            return Decided(change, _Outcome(steps[step], conflict))

        outcome = await self.deps.store.decide(incident_id, apply, now=now)
        if outcome.conflict:
            raise ApprovalConflict(outcome.conflict)
        log.info("incident #%d: %s %s by %s (%s)", incident_id, step, decision.value, actor, source)
        return outcome.record

    def _close(
        self,
        incident: Incident,
        steps: dict[str, StepRecord],
        approvals: dict[str, ApprovalRecord],
        step: str,
        decision: Decision,
        now: float,
        reason: str,
    ) -> IncidentChange:
        approval, record = approvals[step], steps[step]
        approval.state, approval.decided_at = _APPROVAL_STATE[decision], now
        approval.reason = reason or {
            Decision.EXPIRE: "nobody approved it in time",
            Decision.CANCEL: "the incident resolved before anyone approved it",
        }.get(decision, "")
        record.state, record.reason, record.updated_at = _STEP_STATE[decision], approval.reason, now
        who = approval.actor or "alertpilot"
        where = f" ({approval.source})" if approval.source else ""
        message = {
            Decision.APPROVE: f"approved by {who}{where}; it will run",
            Decision.REJECT: f"rejected by {who}{where}",
            Decision.EXPIRE: "approval expired: nobody approved it in time",
            Decision.CANCEL: "approval cancelled: the incident resolved",
        }[decision]
        if reason and decision is Decision.REJECT:
            message += f": {reason}"
        events: list[NewEvent] = [approval_event(approval, message, actor=who)]
        jobs: list[NewJob] = []
        if decision is Decision.APPROVE:
            jobs.append(run_job(incident.id, step, record.attempt, now))
        else:
            events.append(step_event(record, f"will not run: {approval.reason or message}"))
        data = {"remediations": dump(steps), "approvals": dump(approvals)}
        return IncidentChange(data=data, events=events, jobs=jobs)

    async def expire_job(self, job: Job) -> None:
        """The approval's timer: expire it if it is still pending."""
        incident_id, step = int(job.payload["incident_id"]), str(job.payload["step"])
        attempt = int(job.payload["attempt"])
        now = self.deps.clock.now()

        def apply(incident: Incident) -> IncidentChange:
            steps, approvals = steps_of(incident), approvals_of(incident)
            approval = approvals.get(step)
            if (
                approval is None
                or approval.attempt != attempt
                or approval.state is not ApprovalState.PENDING
                or step not in steps
            ):
                return IncidentChange()
            if now < approval.expires_at:
                raise RetryLater("approval not due yet", delay=approval.expires_at - now)
            return self._close(incident, steps, approvals, step, Decision.EXPIRE, now, "")

        await self.deps.store.change_incident(incident_id, apply, now=now)

    async def cancel_pending(self, incident_id: int) -> None:
        """The incident resolved: every pending approval is cancelled."""
        now = self.deps.clock.now()

        def apply(incident: Incident) -> IncidentChange:
            steps, approvals = steps_of(incident), approvals_of(incident)
            events: list[NewEvent] = []
            for step, approval in approvals.items():
                if approval.state is ApprovalState.PENDING and step in steps:
                    change = self._close(incident, steps, approvals, step, Decision.CANCEL, now, "")
                    events += change.events
            if not events:
                return IncidentChange()
            data = {"remediations": dump(steps), "approvals": dump(approvals)}
            return IncidentChange(data=data, events=events)

        await self.deps.store.change_incident(incident_id, apply, now=now)

    async def pending(self, incident_id: int) -> list[PendingApproval]:
        incident = await self.deps.store.get_incident(incident_id, timeline=False)
        steps, now = steps_of(incident), self.deps.clock.now()
        out = []
        for step, approval in approvals_of(incident).items():
            record = steps.get(step)
            if approval.state is not ApprovalState.PENDING or record is None:
                continue
            if now >= approval.expires_at:
                continue
            out.append(
                PendingApproval(
                    step=step,
                    playbook=record.playbook,
                    description=record.description,
                    call=str((record.call or {}).get("text", "")),
                    attempt=approval.attempt,
                    requested_at=approval.requested_at,
                    expires_at=approval.expires_at,
                )
            )
        return out
