"""The ``remediation.verify`` job: one check of a step's verify query.

Verify holds when the query returns at least one sample and every sample satisfies
``expect``. Checks run every ``interval`` until the query holds (the step is verified)
or ``within`` has passed since the step ran; each check is its own job with a due time,
so verification survives restarts. When time runs out the step is marked failed, the
incident escalates (``incident.escalated``) and the rollback, if any, is queued. A
Prometheus error counts as "does not hold" for that check.
"""

from __future__ import annotations

import logging

from bot.core.durations import format_duration
from bot.core.incidents import Incident
from bot.playbook.model import Remediation
from bot.remediation import guard
from bot.remediation.deps import Deps, StepUpdate, run_job, update_step
from bot.remediation.records import (
    RollbackRecord,
    RollbackState,
    StepRecord,
    StepState,
    VerifyState,
    finite,
    step_event,
    steps_of,
)
from bot.remediation.results import truncate
from bot.remediation.runner import verify_job
from bot.store.base import Job
from bot.upstream.prometheus import PrometheusError

log = logging.getLogger(__name__)


class Verifier:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def __call__(self, job: Job) -> None:
        incident_id = int(job.payload["incident_id"])
        key, attempt = str(job.payload["step"]), int(job.payload["attempt"])
        check = int(job.payload["check"])
        incident = await self.deps.store.get_incident(incident_id, timeline=False)
        record = steps_of(incident).get(key)
        if (
            record is None
            or record.attempt != attempt
            or record.state is not StepState.VERIFYING
            or record.verify is None
        ):
            return
        spec = Remediation.model_validate(record.spec)
        if spec.verify is None:
            return
        held, value, error = await self._check(record.verify.query, spec)
        now = self.deps.clock.now()
        deadline = record.verify.deadline
        if held:
            await self._verified(incident_id, record, value)
        elif now < deadline:
            due = min(now + record.verify.interval, deadline)
            await self._again(incident_id, record, value, error, check, due)
        else:
            await self._failed(incident, record, spec, value, error)

    async def _check(self, query: str, spec: Remediation) -> tuple[bool, float | None, str]:
        assert spec.verify is not None
        prometheus = self.deps.connections().prometheus
        if prometheus is None:
            return False, None, "no Prometheus client"
        try:
            samples = await prometheus.query(query)
        except PrometheusError as exc:
            return False, None, truncate(str(exc), 300)
        if not samples:
            return False, None, "empty result"
        values = [s.value for s in samples]
        worst = next((v for v in values if not spec.verify.expect.holds(v)), values[0])
        return all(spec.verify.expect.holds(v) for v in values), finite(worst), ""

    async def _verified(self, incident_id: int, record: StepRecord, value: float | None) -> None:
        def change(current: StepRecord, incident: Incident) -> StepUpdate | None:
            if current.state is not StepState.VERIFYING or current.verify is None:
                return None
            current.state = StepState.VERIFIED
            current.verify.state, current.verify.last_value = VerifyState.HELD, value
            current.verify.checks += 1
            current.verify.last_error = ""
            message = f"verified: {current.verify.query} = {_fmt(value)} ({current.verify.expect})"
            return StepUpdate(current, events=[step_event(current, message, value=value)])

        await update_step(self.deps, incident_id, record.key, record.attempt, change)

    async def _again(
        self,
        incident_id: int,
        record: StepRecord,
        value: float | None,
        error: str,
        check: int,
        due: float,
    ) -> None:
        def change(current: StepRecord, incident: Incident) -> StepUpdate | None:
            if current.state is not StepState.VERIFYING or current.verify is None:
                return None
            current.verify.checks += 1
            current.verify.last_value, current.verify.last_error = value, error
            job = verify_job(incident_id, current.key, current.attempt, check + 1, due)
            return StepUpdate(current, jobs=[job])

        await update_step(self.deps, incident_id, record.key, record.attempt, change)

    async def _failed(
        self,
        incident: Incident,
        record: StepRecord,
        spec: Remediation,
        value: float | None,
        error: str,
    ) -> None:
        assert record.verify is not None and spec.verify is not None
        seen = error or f"last value {_fmt(value)}"
        reason = (
            f"verify {record.verify.query} {record.verify.expect} did not hold within "
            f"{format_duration(spec.verify.within)} ({seen})"
        )
        resolved = guard.resolved_stop(incident)
        if resolved is None:  # escalate first: a crash in between repeats the page, never loses it
            await self.deps.actions.escalate(
                incident.id,
                actor="alertpilot",
                source="alertpilot",
                reason=f"remediation {record.key} did not fix it: {reason}",
                data={"step": record.key, "remediation": "verify_failed"},
            )
        now = self.deps.clock.now()

        def change(current: StepRecord, current_incident: Incident) -> StepUpdate | None:
            if current.state is not StepState.VERIFYING or current.verify is None:
                return None
            current.state, current.reason = StepState.FAILED, reason
            current.verify.state, current.verify.last_value = VerifyState.FAILED, value
            current.verify.checks += 1
            current.verify.last_error = error
            update = StepUpdate(current, events=[step_event(current, f"failed: {reason}")])
            if spec.rollback is not None:
                stop = guard.resolved_stop(current_incident)
                if stop is None:
                    current.rollback = RollbackRecord(state=RollbackState.QUEUED)
                    update.jobs = [
                        run_job(current_incident.id, current.key, current.attempt, now, "rollback")
                    ]
                else:
                    current.rollback = RollbackRecord(
                        state=RollbackState.SKIPPED, reason=stop.reason
                    )
            return update

        await update_step(self.deps, incident.id, record.key, record.attempt, change)
        log.warning("incident #%d: %s", incident.id, reason)


def _fmt(value: float | None) -> str:
    return "no value" if value is None else f"{value:g}"
