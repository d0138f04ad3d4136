"""What every part of remediation works with, and the one way a step's record changes.

Job kinds: ``remediation.run`` (run a step or its rollback), ``remediation.verify`` (one
verify check; the next is a new job with a later due time), ``remediation.expire`` (an
approval's expiry), ``remediation.events`` (timeline subscriber: acts on resolves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core.clock import Clock
from bot.core.incidents import AlertRecord, Incident
from bot.core.transitions import IncidentActions
from bot.playbook import templating
from bot.remediation.actions import ActionContext, ActionRegistry, Connections
from bot.remediation.records import StepRecord, dump, steps_of
from bot.settings import RemediationSettings
from bot.store.base import IncidentChange, NewEvent, NewJob, Store

RUN = "remediation.run"
VERIFY = "remediation.verify"
EXPIRE = "remediation.expire"
EVENTS = "remediation.events"


@dataclass(frozen=True)
class Deps:
    store: Store
    clock: Clock
    settings: RemediationSettings
    actions: IncidentActions
    registry: ActionRegistry
    connections: Callable[[], Connections] = Connections

    def context(
        self, incident: Incident, step: str, alert: AlertRecord | None = None
    ) -> ActionContext:
        """What the step's templates see; ``labels`` and ``annotations`` are ``alert``'s
        (default: the first firing alert's, as ``templating.context`` has them)."""
        values = templating.context(incident)
        if alert is not None:
            values |= {"labels": dict(alert.labels), "annotations": dict(alert.annotations)}
        return ActionContext(templating.environment(), values, incident, step)


def run_key(incident_id: int, step: str, attempt: int, phase: str = "run") -> str:
    suffix = "" if phase == "run" else f":{phase}"
    return f"{RUN}:{incident_id}:{step}:{attempt}{suffix}"


def run_job(incident_id: int, step: str, attempt: int, due_at: float, phase: str = "run") -> NewJob:
    return NewJob(
        RUN,
        run_key(incident_id, step, attempt, phase),
        due_at,
        {"step": step, "attempt": attempt, "phase": phase},
    )


@dataclass
class StepUpdate:
    """A step's new record, with the events, jobs and other data keys that go with it."""

    record: StepRecord
    events: Sequence[NewEvent] = ()
    jobs: Sequence[NewJob] = ()
    data: dict[str, Any] = field(default_factory=dict)


StepChange = Callable[[StepRecord, Incident], StepUpdate | None]


async def update_step(
    deps: Deps, incident_id: int, key: str, attempt: int, change: StepChange
) -> StepRecord | None:
    """Apply ``change`` to the step's current record in one store transaction.

    ``change`` sees the record and the incident as they are now, and returns None to
    leave things as they are. Returns the new record (None if nothing changed, or the
    step is gone or on another attempt).
    """
    written: list[StepRecord] = []

    def apply(incident: Incident) -> IncidentChange:
        steps = steps_of(incident)
        record = steps.get(key)
        if record is None or record.attempt != attempt:
            return IncidentChange()
        update = change(record, incident)
        if update is None:
            return IncidentChange()
        steps[key] = update.record.model_copy(update={"updated_at": deps.clock.now()})
        written.append(steps[key])
        data = {"remediations": dump(steps), **update.data}
        return IncidentChange(data=data, events=update.events, jobs=update.jobs)

    await deps.store.change_incident(incident_id, apply, now=deps.clock.now())
    return written[0] if written else None
