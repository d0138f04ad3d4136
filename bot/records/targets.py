"""The response targets' record: ``incident.data["targets"]`` (``TargetState``).

Written only by ``bot.targets`` (inside ``store.change_incident``); the Slack message,
reminders and the postmortem draft read it to say when a level is due or was missed.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.core.incidents import Incident
from bot.settings import Severity

log = logging.getLogger("bot.targets")  # where its lines were always logged

TimerName = Literal["ack", "resolve"]


class Timer(BaseModel):
    key: str
    due: float


class Escalated(BaseModel):
    level: int
    at: float
    reason: str


class TargetState(BaseModel):
    """``incident.data["targets"]``: the targets in force, the level reached, the timers."""

    model_config = ConfigDict(extra="ignore")

    severity: Severity | None = None  # what the targets were chosen for
    source: str = ""  # "default for P1", "playbook checkout, P1"
    playbooks: list[str] = Field(default_factory=list)
    ack_within: float | None = None
    resolve_within: float | None = None
    level: int = 1  # the first notification is level 1
    ack_from: float | None = None  # the acknowledgement wait runs from here
    ack_due: float | None = None  # the next level, while triggered
    resolve_by: float | None = None
    escalations: list[Escalated] = Field(default_factory=list)
    ack_missed_at: float | None = None
    resolve_missed_at: float | None = None
    seq: int = 0  # numbers timer keys: a replanned timer never reuses a cancelled key
    timers: dict[TimerName, Timer] = Field(default_factory=dict)


def targets_of(incident: Incident) -> TargetState:
    """The incident's response targets (a fresh state, planned again, when unreadable)."""
    raw = incident.data.get("targets") or {}
    try:
        return TargetState.model_validate(raw)
    except ValidationError as exc:
        log.warning(
            "incident #%d: unreadable response targets, planning again: %s", incident.id, exc
        )
        return TargetState()
