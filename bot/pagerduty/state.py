"""What alertpilot knows of an incident's PagerDuty side: ``incident.data["pagerduty"]``.

``PageState`` holds the escalation decision, the alert the page opened (and any
re-pages for higher levels), the escalation level asked for, and PagerDuty's incident
once a webhook named it. Only ``bot.pagerduty.sender.Pager`` writes it, inside
``store.change_incident``; the helpers here are pure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.core.incidents import Incident

log = logging.getLogger(__name__)

Action = Literal["trigger", "acknowledge", "resolve"]
AlertState = Literal["none", "triggered", "acknowledged", "resolved"]
MAX_SENT = 20
ALERT_FOR_STATUS: dict[str, AlertState] = {
    "triggered": "triggered",
    "acknowledged": "acknowledged",
    "resolved": "resolved",
}


class SentEvent(BaseModel):
    action: Action
    at: float
    reason: str = ""


class PdIncident(BaseModel):
    """PagerDuty's incident for ours, learned from its webhooks."""

    id: str
    number: int | None = None
    html_url: str | None = None


class Repage(BaseModel):
    """A new trigger for a higher escalation level (no REST API to escalate with): its own
    PagerDuty alert, followed by acknowledge and resolve like the first."""

    level: int
    dedup_key: str
    at: float
    alert: AlertState = "triggered"


class LevelSent(BaseModel):
    """How alertpilot's escalation level ``step`` (``bot.targets``) reached PagerDuty."""

    step: int
    how: Literal["rest", "repage", "page", "skipped"]
    at: float
    pd_level: int | None = None


class PageState(BaseModel):
    """``incident.data["pagerduty"]``: the escalation decision and what PagerDuty holds."""

    model_config = ConfigDict(extra="ignore")

    dedup_key: str | None = None
    alert: AlertState = "none"  # PagerDuty's alert, as far as alertpilot knows
    escalation: Literal["undecided", "scheduled", "paged", "not_paged", "rejected"] = "undecided"
    policy: Literal["immediately", "if_unacked", "never"] | None = None
    policy_after: float = 0.0
    policy_source: str | None = None
    playbooks: list[str] = Field(default_factory=list)
    decided_at: float | None = None
    escalate_at: float | None = None
    triggered_at: float | None = None
    trigger_reason: str | None = None
    triggering_since: float | None = None  # a trigger's intent, until PagerDuty answers
    last_action: Action | None = None
    last_sent_at: float | None = None
    note: str | None = None
    sent: list[SentEvent] = Field(default_factory=list)
    pd_incident: PdIncident | None = None
    html_url: str | None = None  # PagerDuty's incident page (the Slack message links it)
    level: int = 1  # the escalation level PagerDuty was last asked for (the page: 1)
    pd_escalations: int = 0  # incident.escalated webhooks about the page
    levels: list[LevelSent] = Field(default_factory=list)
    repages: list[Repage] = Field(default_factory=list)


def holds(state: PageState, action: Action, dedup_key: str, now: float, reason: str) -> None:
    """Record that PagerDuty holds ``action`` for the incident (sent, or found there)."""
    state.dedup_key = dedup_key
    state.last_action, state.last_sent_at = action, now
    state.sent = [*state.sent, SentEvent(action=action, at=now, reason=reason)][-MAX_SENT:]
    if action == "trigger":
        state.alert, state.escalation = "triggered", "paged"
        state.triggered_at, state.trigger_reason = now, reason
        state.triggering_since = None
    else:
        state.alert = "acknowledged" if action == "acknowledge" else "resolved"


def follows(alert: AlertState, action: Action) -> bool:
    """Whether an alert in state ``alert`` takes ``action`` (a trigger opened it, and it
    is not there yet)."""
    if alert in ("none", "resolved"):
        return False
    return action != "acknowledge" or alert == "triggered"


def repaged(level: int, action: Action) -> Callable[[PageState, float], None]:
    """Record that the level ``level`` re-page's alert took ``action``."""

    def record(state: PageState, now: float) -> None:
        for repage in state.repages:
            if repage.level == level:
                repage.alert = "acknowledged" if action == "acknowledge" else "resolved"
        state.last_action, state.last_sent_at = action, now

    return record


def state_of(incident: Incident) -> PageState:
    """The incident's PagerDuty state (a fresh one when it is unreadable)."""
    raw = incident.data.get("pagerduty") or {}
    try:
        return PageState.model_validate(raw)
    except ValidationError as exc:
        log.warning("incident #%d: unreadable PagerDuty state, starting over: %s", incident.id, exc)
        return PageState()


def already_paged(state: PageState) -> bool:
    """Whether PagerDuty holds (or held) the incident's alert: then no trigger goes out."""
    return state.alert != "none"
