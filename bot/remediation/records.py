"""What remediation keeps on an incident, and the timeline events it writes.

``incident.data["remediations"]`` maps a step key (the step's name; ``playbook/name`` when
two matched playbooks use one name) to a ``StepRecord``; ``incident.data["approvals"]``
maps the same key to an ``ApprovalRecord``; the engine reads them strictly (``steps_of``,
``approvals_of``), what people are shown leniently (``bot.records.steps``). Silences a
step created are recorded through ``bot.silences.service`` in ``incident.data["silences"]``
as ``SilenceRecord`` (``bot.records.silences``) with ``source`` "remediation" and ``step``.

A step moves through these states::

    planned ─▶ skipped (a guard stopped it: ``guard`` and ``reason`` say which and why)
            ─▶ suggested (shown to people; alertpilot never runs it)
            ─▶ pending_approval ─▶ approved ─▶ running ─▶ ...
                                ─▶ rejected | expired | cancelled (incident resolved)
            ─▶ queued (auto, or dry_run) ─▶ running ─▶ succeeded | failed
                                                   ─▶ verifying ─▶ verified | failed
                                         ─▶ dry_run (shadow: recorded, nothing ran)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.core.incidents import EventKind, Incident
from bot.errors import PermanentFailure
from bot.records.base import first_error
from bot.remediation.headers import masked
from bot.remediation.results import Guard, StepResult, truncate
from bot.settings import RemediationMode
from bot.store.base import NewEvent

ACTOR = "alertpilot"
EXCERPT = 1000


class StepState(StrEnum):
    SKIPPED = "skipped"
    SUGGESTED = "suggested"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    QUEUED = "queued"
    RUNNING = "running"
    DRY_RUN = "dry_run"
    SUCCEEDED = "succeeded"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    FAILED = "failed"


RUNNABLE = frozenset({StepState.QUEUED, StepState.APPROVED})


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class VerifyState(StrEnum):
    CHECKING = "checking"
    HELD = "held"
    FAILED = "failed"


class RollbackState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SKIPPED = "skipped"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VerifyRecord(Record):
    query: str  # rendered
    expect: str
    started_at: float
    deadline: float
    interval: float
    state: VerifyState = VerifyState.CHECKING
    checks: int = 0
    last_value: float | None = None
    last_error: str = ""


class RollbackRecord(Record):
    state: RollbackState
    reason: str = ""
    call: dict[str, Any] | None = None
    result: StepResult | None = None


class StepRecord(Record):
    key: str
    step: str
    playbook: str
    kind: str
    description: str = ""
    mode: RemediationMode  # effective: min(step mode, remediation.mode)
    state: StepState
    attempt: int = 1
    guard: Guard | None = None
    reason: str = ""
    # what it runs (or would), rendered and checked: what the proposal and approval showed
    call: dict[str, Any] | None = None
    result: StepResult | None = None
    verify: VerifyRecord | None = None
    rollback: RollbackRecord | None = None
    # the step as proposed: what is approved is what runs (webhook header values are
    # "(not recorded)": the run takes them from the loaded playbook)
    spec: dict[str, Any]
    # what the step acts on, as planned (guard.target_of): it runs only while an alert of
    # this target fires (None on records planned before it was kept: the current target)
    target: dict[str, str] | None = None
    # the fingerprint of the alert the call was rendered from when it was proposed: the
    # run renders it from that alert again (guard.run_alert) and runs only the same call
    alert: str | None = None
    planned_at: float
    updated_at: float

    @field_validator("spec")
    @classmethod
    def _no_header_values(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """Webhook header values may be credentials: a record never holds them
        (``headers.masked``), whoever built it and whenever it was stored."""
        return masked(spec)


class ApprovalRecord(Record):
    step: str
    attempt: int
    state: ApprovalState = ApprovalState.PENDING
    requested_at: float
    expires_at: float
    actor: str | None = None
    source: str | None = None
    decided_at: float | None = None
    reason: str = ""


class UnreadableRecord(PermanentFailure):
    """A step or approval record the engine cannot read. Its job stops, with this as the
    recorded reason, rather than plan or run the step again as if it had no record (what
    people are shown reads records leniently: ``bot.records.steps``)."""


R = TypeVar("R", StepRecord, ApprovalRecord)


def _records(incident: Incident, key: str, model: type[R]) -> dict[str, R]:
    raw = incident.data.get(key) or {}
    if not isinstance(raw, Mapping):
        raise UnreadableRecord(f'incident #{incident.id}: data["{key}"] is not a map')
    out: dict[str, R] = {}
    for name, value in raw.items():
        try:
            out[name] = model.model_validate(value)
        except ValidationError as exc:
            raise UnreadableRecord(
                f'incident #{incident.id}: data["{key}"][{name!r}] cannot be read: '
                + first_error(exc)
            ) from None
    return out


def steps_of(incident: Incident) -> dict[str, StepRecord]:
    return _records(incident, "remediations", StepRecord)


def approvals_of(incident: Incident) -> dict[str, ApprovalRecord]:
    return _records(incident, "approvals", ApprovalRecord)


def dump(records: dict[str, StepRecord] | dict[str, ApprovalRecord]) -> dict[str, Any]:
    return {key: record.model_dump(mode="json") for key, record in records.items()}


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def step_event(record: StepRecord, message: str, **extra: Any) -> NewEvent:
    """A ``remediation`` timeline event with the step's state, guard, reason and output."""
    data: dict[str, Any] = {
        "step": record.key,
        "playbook": record.playbook,
        "kind": record.kind,
        "mode": record.mode.value,
        "state": record.state.value,
        "attempt": record.attempt,
    }
    if record.guard is not None:
        data["guard"] = record.guard.value
    if record.reason:
        data["reason"] = record.reason
    if record.call is not None:
        data["call"] = record.call.get("text", "")
    if record.result is not None:
        data |= {
            "status": record.result.status.value,
            "summary": record.result.summary,
            "output": truncate(record.result.output, EXCERPT),
            "exit_code": record.result.exit_code,
            "http_status": record.result.http_status,
            "duration": record.result.duration,
        }
        if record.result.silence_id:
            data["silence_id"] = record.result.silence_id
    data |= extra
    return NewEvent(
        actor=ACTOR, kind=EventKind.REMEDIATION, message=f"{record.key}: {message}", data=data
    )


def approval_event(
    approval: ApprovalRecord, message: str, *, actor: str = ACTOR, **extra: Any
) -> NewEvent:
    data: dict[str, Any] = {
        "step": approval.step,
        "state": approval.state.value,
        "attempt": approval.attempt,
        "expires_at": approval.expires_at,
    }
    if approval.actor:
        data |= {"actor": approval.actor, "source": approval.source}
    if approval.reason:
        data["reason"] = approval.reason
    data |= extra
    return NewEvent(
        actor=actor, kind=EventKind.APPROVAL, message=f"{approval.step}: {message}", data=data
    )


class PendingApproval(Record):
    """A step waiting for a person (for Slack buttons, the API and the CLI)."""

    step: str
    playbook: str
    description: str
    call: str
    attempt: int
    requested_at: float
    expires_at: float


class StepPreview(Record):
    """What a step would do and which guard would stop it (for ``alertpilot simulate``)."""

    step: str
    playbook: str
    kind: str
    mode: RemediationMode
    call: str | None = None
    stopped_by: Guard | None = None
    reason: str = ""
    notes: list[str] = Field(default_factory=list)

    def line(self) -> str:
        what = self.call or "(no call)"
        verdict = (
            self.reason  # "not applicable: needs label `namespace`"
            if self.stopped_by is Guard.NOT_APPLICABLE
            else f"stopped by {self.stopped_by.value}: {self.reason}"
            if self.stopped_by
            else (self.reason or self.mode.value)
        )
        return f"{self.step} [{self.mode.value}] {what} -> {verdict}"
