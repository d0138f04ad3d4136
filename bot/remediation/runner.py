"""The ``remediation.run`` job: guards right before running, then the action, then the record.

Order: the step must still be queued or approved on this attempt; the incident must not
be resolved, and an alert of the step's target (as planned) must still fire; the call is
rendered again from the alert it was planned for (``guard.run_alert``: while that alert
fires, else another firing alert of the target), with webhook header templates taken
from the loaded playbook (their values are never recorded: ``headers.with_headers``),
and checked again (allowlists, patterns); it must be exactly the call proposed, which
is what the approval showed (else the ``changed`` guard stops it); the ``when``
precondition must hold. A dry run records the call and which guard would stop it, and
ends there. Otherwise the step is marked running (atomically, re-checking that neither
the incident nor the step's target has resolved and that the call is still the one
proposed), a max_runs/cooldown slot is taken, and the action runs.
A job that finds its step already running was interrupted by a restart: the step is
marked failed and never run a second time.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.core.incidents import AlertRecord, Incident
from bot.errors import RetryLater
from bot.playbook.model import Remediation
from bot.playbook.templating import NotApplicable, RenderError, render
from bot.remediation import guard
from bot.remediation.actions import Call, SilenceCall
from bot.remediation.deps import VERIFY, Deps, StepUpdate, run_job, update_step
from bot.remediation.headers import with_headers
from bot.remediation.records import (
    RUNNABLE,
    RollbackRecord,
    RollbackState,
    StepRecord,
    StepState,
    VerifyRecord,
    step_event,
    steps_of,
)
from bot.remediation.results import Guard, Refused, StepResult, Stop
from bot.settings import RemediationMode
from bot.silences.service import NewSilence, added
from bot.store.base import Job, NewJob

log = logging.getLogger(__name__)

PRECONDITION_TRIES = 3
PRECONDITION_RETRY = 5.0


def verify_job(incident_id: int, key: str, attempt: int, check: int, due_at: float) -> NewJob:
    return NewJob(
        VERIFY,
        f"{VERIFY}:{incident_id}:{key}:{attempt}:{check}",
        due_at,
        {"incident_id": incident_id, "step": key, "attempt": attempt, "check": check},
        attach=False,  # polls of one step must not wait behind another step's
    )


class StepRunner:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def __call__(self, job: Job) -> None:
        if job.incident_id is None:
            return
        key, attempt = str(job.payload["step"]), int(job.payload["attempt"])
        incident = await self.deps.store.get_incident(job.incident_id, timeline=False)
        record = steps_of(incident).get(key)
        if record is None or record.attempt != attempt:
            log.info(
                "incident #%d: %s attempt %d is gone; nothing to run", incident.id, key, attempt
            )
            return
        if job.payload.get("phase") == "rollback":
            await self._rollback(incident, record)
        else:
            await self._run(job, incident, record)

    # the step ----------------------------------------------------------------------

    async def _run(self, job: Job, incident: Incident, record: StepRecord) -> None:
        if record.state is StepState.RUNNING:
            await self._stop(incident.id, record, _INTERRUPTED, StepState.FAILED)
            return
        if record.state not in RUNNABLE:
            return  # decided otherwise meanwhile (rejected, cancelled, done)
        spec = Remediation.model_validate(record.spec)
        target = record.target if record.target is not None else guard.target_of(spec, incident)
        alert = guard.run_alert(incident, record.alert, target)
        ctx = self.deps.context(incident, record.key, alert)
        stop = guard.resolved_stop(incident, spec, target)
        call: Call | None = None
        verify_query = ""
        if stop is None:
            try:
                spec = with_headers(
                    spec, self.deps.connections().playbooks, record.playbook, "action"
                )
                call = self.deps.registry.prepare(spec.action, ctx)
                stop = guard.proposed_stop(record.call, call.display())
                if stop is None and spec.verify is not None:
                    verify_query = _render(ctx.env, spec.verify.query, ctx.values, "verify.query")
            except Refused as exc:
                stop = exc.stop
        if stop is None and spec.when:
            stop = await self._precondition(job, spec.when, ctx.env, ctx.values)
        dry = record.mode is RemediationMode.DRY_RUN
        if dry:
            if stop is None:
                now = self.deps.clock.now()
                stop = await guard.rate_stop(
                    self.deps.store, record.playbook, spec, incident, now, target
                )
            await self._dry_run(incident.id, record, call, stop)
            return
        if stop is not None or call is None:
            await self._stop(incident.id, record, stop or _INTERRUPTED, StepState.SKIPPED)
            return
        if not await self._claim(incident.id, record, call):
            return
        limit = await self.deps.store.take_rate_slot(
            guard.rate_limits(record.playbook, spec, incident, target), now=self.deps.clock.now()
        )
        if limit is not None:
            stop = guard.limit_stop(limit, spec, incident, target)
            await self._stop(incident.id, record, stop, StepState.SKIPPED, frm=StepState.RUNNING)
            return
        result = await self.deps.registry.execute(spec.action, call, self.deps.connections())
        await self._finish(incident.id, record, spec, call, result, verify_query)

    async def _precondition(self, job: Job, when: str, env: Any, values: Any) -> Stop | None:
        conns = self.deps.connections()
        try:
            return await guard.precondition_stop(conns.prometheus, when, env, values)
        except guard.PreconditionUnavailable as exc:
            if job.attempts < PRECONDITION_TRIES:
                raise RetryLater(f"precondition: {exc}", delay=PRECONDITION_RETRY) from None
            return Stop(Guard.WHEN, f"precondition could not be checked: {exc}")

    async def _dry_run(
        self, incident_id: int, record: StepRecord, call: Call | None, stop: Stop | None
    ) -> None:
        text = str(call.display()["text"]) if call is not None else "(no call)"

        def change(current: StepRecord, incident: Incident) -> StepUpdate | None:
            if current.state not in RUNNABLE:
                return None
            current.state = StepState.DRY_RUN
            current.call = call.display() if call is not None else current.call
            if stop is None:
                current.reason = "dry run: all guards pass; would run"
                message = f"dry run, nothing ran; would run: {text}"
            else:
                current.guard = stop.guard
                current.reason = f"dry run: would be stopped: {stop.reason}"
                message = (
                    f"dry run, nothing ran; would be stopped by {stop.guard.value}: {stop.reason}"
                )
            return StepUpdate(
                current, events=[step_event(current, message, would_run=stop is None)]
            )

        await update_step(self.deps, incident_id, record.key, record.attempt, change)

    async def _stop(
        self,
        incident_id: int,
        record: StepRecord,
        stop: Stop,
        state: StepState,
        *,
        frm: StepState | None = None,
    ) -> None:
        def change(current: StepRecord, incident: Incident) -> StepUpdate | None:
            allowed = {frm} if frm else RUNNABLE | {StepState.RUNNING}
            if current.state not in allowed:
                return None
            current.state, current.guard, current.reason = state, stop.guard, stop.reason
            verb = "failed" if state is StepState.FAILED else "not run"
            return StepUpdate(current, events=[step_event(current, f"{verb}: {stop.reason}")])

        await update_step(self.deps, incident_id, record.key, record.attempt, change)

    async def _claim(self, incident_id: int, record: StepRecord, call: Call) -> bool:
        """Mark the step running, unless it changed or the incident resolved meanwhile."""

        def change(current: StepRecord, incident: Incident) -> StepUpdate | None:
            if current.state not in RUNNABLE:
                return None
            spec = Remediation.model_validate(current.spec)
            stop = guard.resolved_stop(incident, spec, current.target) or guard.proposed_stop(
                current.call, call.display()
            )
            if stop is not None:
                current.state, current.guard = StepState.SKIPPED, stop.guard
                current.reason = stop.reason
                return StepUpdate(current, events=[step_event(current, f"not run: {stop.reason}")])
            current.state, current.call = StepState.RUNNING, call.display()
            return StepUpdate(current, events=[step_event(current, f"running: {call.describe()}")])

        updated = await update_step(self.deps, incident_id, record.key, record.attempt, change)
        return updated is not None and updated.state is StepState.RUNNING

    async def _finish(
        self,
        incident_id: int,
        record: StepRecord,
        spec: Remediation,
        call: Call,
        result: StepResult,
        verify_query: str,
    ) -> None:
        now = self.deps.clock.now()

        def change(current: StepRecord, incident: Incident) -> StepUpdate | None:
            if current.state is not StepState.RUNNING:
                return None
            current.result = result
            update = StepUpdate(current)
            if not result.ok:
                current.state, current.reason = StepState.FAILED, result.summary
                update.events = [step_event(current, f"failed: {result.summary}")]
                return update
            if isinstance(call, SilenceCall) and result.silence_id:
                # with the expiry job when it resolved while the silence was being made
                recorded = added(
                    incident,
                    NewSilence(
                        id=result.silence_id,
                        source="remediation",
                        expire_on_resolve=call.expire_on_resolve,
                        step=current.key,
                        url=result.output,
                        matchers=call.matchers,
                    ),
                    now,
                )
                update.data |= recorded.data
                update.jobs = [*recorded.jobs]
            if spec.verify is None:
                current.state = StepState.SUCCEEDED
                update.events = [step_event(current, f"ran: {result.summary}")]
                return update
            v = spec.verify
            current.state = StepState.VERIFYING
            current.verify = VerifyRecord(
                query=verify_query,
                expect=str(v.expect),
                started_at=now,
                deadline=now + v.within,
                interval=v.interval,
            )
            update.events = [step_event(current, f"ran: {result.summary}; verifying")]
            update.jobs = [
                *update.jobs,
                verify_job(
                    incident.id, current.key, current.attempt, 1, now + min(v.interval, v.within)
                ),
            ]
            return update

        if not result.ok:  # escalate first: a crash in between repeats the page, never loses it
            await self.deps.actions.escalate(
                incident_id,
                actor="alertpilot",
                source="alertpilot",
                reason=f"remediation {record.key} failed: {result.summary}",
                data={"step": record.key, "remediation": "failed"},
            )
        await update_step(self.deps, incident_id, record.key, record.attempt, change)

    # the rollback ------------------------------------------------------------------

    async def _rollback(self, incident: Incident, record: StepRecord) -> None:
        rollback = record.rollback
        if rollback is None or rollback.state not in (RollbackState.QUEUED, RollbackState.RUNNING):
            return
        spec = Remediation.model_validate(record.spec)
        action = spec.rollback
        if rollback.state is RollbackState.RUNNING or action is None:
            await self._rollback_done(
                incident.id, record, RollbackState.FAILED, _INTERRUPTED.reason
            )
            return
        stop = guard.resolved_stop(incident)
        call: Call | None = None
        if stop is None:
            try:
                loaded = self.deps.connections().playbooks
                action = with_headers(spec, loaded, record.playbook, "rollback").rollback or action
                call = self.deps.registry.prepare(
                    action,
                    self.deps.context(incident, record.key, _step_alert(incident, record)),
                )
            except Refused as exc:
                stop = exc.stop
        if stop is not None or call is None:
            reason = stop.reason if stop else "no call"
            await self._rollback_done(incident.id, record, RollbackState.SKIPPED, reason)
            return
        started = await self._rollback_done(
            incident.id, record, RollbackState.RUNNING, "", call=call.display()
        )
        if not started:
            return
        result = await self.deps.registry.execute(action, call, self.deps.connections())
        state = RollbackState.SUCCEEDED if result.ok else RollbackState.FAILED
        await self._rollback_done(incident.id, record, state, result.summary, result=result)

    async def _rollback_done(
        self,
        incident_id: int,
        record: StepRecord,
        state: RollbackState,
        reason: str,
        *,
        call: dict[str, Any] | None = None,
        result: StepResult | None = None,
    ) -> bool:
        order = [RollbackState.QUEUED, RollbackState.RUNNING]

        def change(current: StepRecord, incident: Incident) -> StepUpdate | None:
            before = current.rollback
            if before is None or before.state not in order:
                return None
            if state is RollbackState.RUNNING and before.state is not RollbackState.QUEUED:
                return None
            current.rollback = RollbackRecord(
                state=state, reason=reason, call=call or before.call, result=result
            )
            text = (call or before.call or {}).get("text", "")
            message = {
                RollbackState.RUNNING: f"rollback running: {text}",
                RollbackState.SUCCEEDED: f"rollback ran: {reason}",
                RollbackState.FAILED: f"rollback failed: {reason}",
                RollbackState.SKIPPED: f"rollback not run: {reason}",
            }[state]
            extra: dict[str, Any] = {"rollback": state.value}
            if result is not None:
                extra |= {
                    "rollback_output": result.output[:1000],
                    "rollback_status": result.status.value,
                }
            return StepUpdate(current, events=[step_event(current, message, **extra)])

        updated = await update_step(self.deps, incident_id, record.key, record.attempt, change)
        return updated is not None


_INTERRUPTED = Stop(
    Guard.INTERRUPTED,
    "alertpilot stopped while this step was running; its outcome is unknown and it is "
    "not run again (a step never runs twice)",
)


def _step_alert(incident: Incident, record: StepRecord) -> AlertRecord | None:
    """The alert a rollback renders from: the one the step was planned (and so ran) for,
    firing or not; a step recorded without one: as the run would choose."""
    planned = next((a for a in incident.alerts if a.fingerprint == record.alert), None)
    if planned is not None or record.target is None:
        return planned
    return guard.run_alert(incident, record.alert, record.target)


def _render(env: Any, source: str, values: Any, where: str) -> str:
    try:
        return render(env, source, values)
    except NotApplicable as exc:
        raise Refused(Guard.NOT_APPLICABLE, str(exc)) from None
    except RenderError as exc:
        raise Refused(Guard.TEMPLATE, f"{where}: {exc}") from None


__all__ = ["StepRunner", "run_job", "verify_job"]
