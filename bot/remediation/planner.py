"""Planning: which steps of the matched playbooks are proposed, and how.

Each step gets its effective mode (the lower of its own and ``remediation.mode``) and
its call, rendered and checked from the incident's first firing alert; that alert's
fingerprint and the step's target (``guard.target_of``, from the same alert) are kept on
the record, so the run renders from the same alert and runs only the call proposed.
Then, in one transaction with the incident as it is now: a stopped step is recorded as
skipped with the guard and reason; ``suggest`` records a suggestion; ``approval`` stores
a pending approval with its expiry (and the timer that expires it); ``auto`` and
``dry_run`` queue the run job. Planning twice changes nothing: a step already on the
incident is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.durations import format_duration
from bot.core.incidents import Incident
from bot.errors import StoreError
from bot.playbook.model import Playbook, Remediation
from bot.records.incident import pipeline_of
from bot.remediation import guard
from bot.remediation.deps import EXPIRE, Deps, run_job
from bot.remediation.headers import recorded_spec
from bot.remediation.records import (
    ApprovalRecord,
    StepPreview,
    StepRecord,
    StepState,
    approval_event,
    approvals_of,
    dump,
    step_event,
    steps_of,
)
from bot.remediation.results import Refused, Stop
from bot.settings import RemediationMode
from bot.store.base import Decided, IncidentChange, NewEvent, NewJob

log = logging.getLogger(__name__)

_WAITS = {
    RemediationMode.DRY_RUN: "dry run: what would run is recorded, nothing runs",
    RemediationMode.SUGGEST: "suggested to people; alertpilot does not run it",
    RemediationMode.APPROVAL: "runs when a person approves it",
    RemediationMode.AUTO: "runs automatically",
}


@dataclass(frozen=True)
class _Draft:
    playbook: str
    spec: Remediation
    mode: RemediationMode
    call: dict[str, object] | None
    stop: Stop | None
    alert: str | None  # the fingerprint of the alert the call was rendered from
    target: dict[str, str]


class Planner:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def matched(self, incident: Incident) -> list[Playbook]:
        """The playbooks the pipeline matched (``data.pipeline.playbooks``, else ``playbook``)."""
        playbooks = self.deps.connections().playbooks
        names = pipeline_of(incident).playbooks
        if names is None:
            names = [incident.playbook] if incident.playbook else []
        found = []
        for name in names:
            playbook = playbooks.get(str(name)) if playbooks is not None else None
            if playbook is None:
                log.warning("incident #%d: playbook %r is not loaded", incident.id, name)
            else:
                found.append(playbook)
        return found

    def _draft(self, playbook: Playbook, spec: Remediation, incident: Incident) -> _Draft:
        mode = guard.effective_mode(spec.mode, self.deps.settings.mode)
        stop = guard.mode_stop(mode)
        alert = guard.subject_alert(incident)
        call = None
        if stop is None:
            try:
                prepared = self.deps.registry.prepare(
                    spec.action, self.deps.context(incident, spec.name, alert)
                )
                call = prepared.display()
            except Refused as exc:
                stop = exc.stop
        return _Draft(
            playbook.name,
            spec,
            mode,
            call,
            stop,
            alert.fingerprint if alert is not None else None,
            guard.target_of(spec, incident, alert),
        )

    async def plan(
        self, incident_id: int, playbooks: Sequence[Playbook] | None = None
    ) -> list[StepRecord]:
        incident = await self.deps.store.get_incident(incident_id, timeline=False)
        books = list(playbooks) if playbooks is not None else self.matched(incident)
        drafts = [self._draft(book, spec, incident) for book in books for spec in book.remediations]
        if not drafts:
            return []
        now = self.deps.clock.now()

        def apply(current: Incident) -> Decided[list[StepRecord]]:
            created: list[StepRecord] = []
            steps, approvals = steps_of(current), approvals_of(current)
            events: list[NewEvent] = []
            jobs: list[NewJob] = []
            for draft in drafts:
                key = draft.spec.name
                if key in steps and steps[key].playbook != draft.playbook:
                    key = f"{draft.playbook}/{draft.spec.name}"
                if key in steps:
                    continue  # planned before
                record = StepRecord(
                    key=key,
                    step=draft.spec.name,
                    playbook=draft.playbook,
                    kind=draft.spec.action.kind,
                    description=draft.spec.description,
                    mode=draft.mode,
                    state=StepState.QUEUED,
                    call=draft.call,
                    spec=recorded_spec(draft.spec),  # header values are never recorded
                    target=draft.target,  # of the alert the call was rendered from
                    alert=draft.alert,
                    planned_at=now,
                    updated_at=now,
                )
                text = str((draft.call or {}).get("text", ""))
                stop = draft.stop or guard.resolved_stop(current, draft.spec, record.target)
                if stop is not None:
                    record.state, record.guard, record.reason = (
                        StepState.SKIPPED,
                        stop.guard,
                        stop.reason,
                    )
                    events.append(step_event(record, f"not proposed: {stop.reason}"))
                elif draft.mode is RemediationMode.SUGGEST:
                    record.state = StepState.SUGGESTED
                    events.append(step_event(record, f"suggested (not run by alertpilot): {text}"))
                elif draft.mode is RemediationMode.APPROVAL:
                    record.state = StepState.PENDING_APPROVAL
                    ttl = self.deps.settings.approval_ttl
                    approval = ApprovalRecord(
                        step=key, attempt=record.attempt, requested_at=now, expires_at=now + ttl
                    )
                    approvals[key] = approval
                    events.append(
                        approval_event(
                            approval,
                            f"approval needed within {format_duration(ttl)}: {text}",
                            state="requested",
                            call=text,
                            playbook=draft.playbook,
                            description=draft.spec.description,
                        )
                    )
                    jobs.append(
                        NewJob(
                            EXPIRE,
                            f"{EXPIRE}:{current.id}:{key}:{record.attempt}",
                            approval.expires_at,
                            {"incident_id": current.id, "step": key, "attempt": record.attempt},
                            attach=False,  # a long timer must not hold up other expiries
                        )
                    )
                else:
                    dry = draft.mode is RemediationMode.DRY_RUN
                    events.append(
                        step_event(
                            record,
                            f"proposed, dry run (nothing will run): {text}"
                            if dry
                            else f"proposed, runs automatically: {text}",
                        )
                    )
                    jobs.append(run_job(current.id, key, record.attempt, now))
                steps[key] = record
                created.append(record)
            if not created:
                return Decided(IncidentChange(), created)
            data = {"remediations": dump(steps), "approvals": dump(approvals)}
            return Decided(IncidentChange(data=data, events=events, jobs=jobs), created)

        created = await self.deps.store.decide(incident_id, apply, now=now)
        log.info("incident #%d: %d remediation step(s) planned", incident_id, len(created))
        return created

    async def describe(self, playbook: Playbook, incident: Incident) -> list[StepPreview]:
        """What each step would do now and which guard would stop it. Reads only."""
        conns = self.deps.connections()
        now = self.deps.clock.now()
        out = []
        for spec in playbook.remediations:
            draft = self._draft(playbook, spec, incident)
            stop = draft.stop or guard.resolved_stop(incident, spec, draft.target)
            notes: list[str] = []
            ctx = self.deps.context(incident, spec.name, guard.subject_alert(incident))
            if stop is None and spec.when:
                try:
                    stop = await guard.precondition_stop(
                        conns.prometheus, spec.when, ctx.env, ctx.values
                    )
                except guard.PreconditionUnavailable as exc:
                    notes.append(f"precondition not checked ({exc}): {spec.when}")
            if stop is None and draft.mode is not RemediationMode.SUGGEST:
                try:
                    stop = await guard.rate_stop(
                        self.deps.store, playbook.name, spec, incident, now, draft.target
                    )
                except StoreError as exc:
                    notes.append(f"max_runs and cooldown not checked: {exc}")
            if spec.verify is not None:
                notes.append(
                    f"verify: {spec.verify.query} {spec.verify.expect} "
                    f"within {format_duration(spec.verify.within)}"
                )
            if spec.rollback is not None:
                notes.append(f"rollback if verify fails: {spec.rollback.kind}")
            out.append(
                StepPreview(
                    step=spec.name,
                    playbook=playbook.name,
                    kind=spec.action.kind,
                    mode=draft.mode,
                    call=str(draft.call["text"]) if draft.call else None,
                    stopped_by=stop.guard if stop else None,
                    reason=stop.reason if stop else _WAITS.get(draft.mode, ""),
                    notes=notes,
                )
            )
        return out
