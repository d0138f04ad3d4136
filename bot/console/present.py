"""What the console's pages show of an incident, worked out from the stored incident so
the templates only lay it out. Every string here is still raw text: the templates
escape it (autoescape), so a label value full of HTML stays text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.core.durations import format_duration
from bot.core.incidents import Event, Incident, Status
from bot.diagnostics.summary import finding, outcome, tally
from bot.notify.links import LinkPolicy
from bot.pagerduty.state import state_of as page_state_of
from bot.records.diagnostics import diagnostics_of
from bot.records.narrative import narrative_of
from bot.records.silences import silences_of
from bot.records.slack import permalink_of
from bot.remediation.records import (
    ApprovalRecord,
    ApprovalState,
    StepRecord,
    UnreadableRecord,
    approvals_of,
    steps_of,
)

OUTCOME_TEXT = {
    "passed": "passed",
    "failed": "failed",
    "not_checked": "not checked",
    "answered": "answered",
}


def utc(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(epoch: float, now: float) -> str:
    """``42s``, ``5m``, ``2h5m``, ``3d4h``: to the minute past a minute, to the hour past
    a day (the future, a clock's skew, is ``0s``)."""
    seconds = max(0, int(now - epoch))
    if seconds < 60:
        return f"{seconds}s"
    step = 3600 if seconds >= 86400 else 60
    return format_duration(seconds - seconds % step)


def service_of(incident: Incident) -> str:
    labels = incident.common_labels
    return labels.get("service") or incident.group_labels.get("service") or ""


def web_link(value: object) -> str | None:
    """An http(s) URL alertpilot recorded itself (a Slack permalink, PagerDuty's page)."""
    if isinstance(value, str) and value.lower().startswith(("https://", "http://")):
        return value
    return None


@dataclass(frozen=True)
class Row:
    """One incident in the list."""

    id: int
    title: str
    status: str
    severity: str
    service: str
    playbook: str
    age: str
    opened: str
    acknowledged_by: str


def row(incident: Incident, now: float) -> Row:
    return Row(
        id=incident.id,
        title=incident.title,
        status=incident.status.value,
        severity=incident.severity.value,
        service=service_of(incident),
        playbook=incident.playbook or "",
        age=age(incident.opened_at, now),
        opened=utc(incident.opened_at),
        acknowledged_by=incident.acknowledged_by or "",
    )


@dataclass(frozen=True)
class Link:
    title: str
    url: str | None  # None: shown as text, the link left out (an untrusted host)


@dataclass(frozen=True)
class AlertView:
    status: str
    name: str
    labels: list[tuple[str, str]]
    annotations: list[tuple[str, str]]
    starts_at: str
    links: list[Link]


def alerts(incident: Incident, policy: LinkPolicy) -> list[AlertView]:
    """Alerts, firing first; a link that came with one is a link only where
    ``links.allowed_urls`` and the configured upstreams allow (``bot.notify.links``)."""
    ordered = sorted(incident.alerts, key=lambda a: a.status != "firing")
    out = []
    for alert in ordered:
        offered = [("Source", alert.generator_url), *alert.links.items()]
        links = [Link(title, url if policy.allows(url) else None) for title, url in offered if url]
        out.append(
            AlertView(
                status=alert.status,
                name=alert.labels.get("alertname", ""),
                labels=sorted(alert.labels.items()),
                annotations=sorted(alert.annotations.items()),
                starts_at=alert.starts_at,
                links=links,
            )
        )
    return out


@dataclass(frozen=True)
class DiagnosticView:
    label: str
    outcome: str  # passed, failed, not_checked, answered
    outcome_text: str
    finding: str
    value: str
    query: str
    lines: list[str]


def diagnostics(incident: Incident) -> tuple[str, list[DiagnosticView]]:
    """The one-line summary (``bot.diagnostics.summary``) and each step's result."""
    results = diagnostics_of(incident)
    if results is None:
        return "", []
    views = []
    for item in results:
        kind = outcome(item)
        value = item.get("value")
        views.append(
            DiagnosticView(
                label=str(item.get("label") or item.get("name") or "?"),
                outcome=kind,
                outcome_text=OUTCOME_TEXT.get(kind, kind),
                finding=finding(item),
                value="" if value is None else f"{value:.6g}{item.get('unit') or ''}",
                query=str(item.get("query") or ""),
                lines=[str(line) for line in item.get("lines") or []][:10],
            )
        )
    return tally(results).line(), views


@dataclass(frozen=True)
class StepView:
    key: str
    playbook: str
    kind: str
    description: str
    mode: str
    state: str
    reason: str
    call: str
    result: str
    output: str
    verify: str
    rollback: str
    approval: ApprovalRecord | None
    pending: bool


def steps(incident: Incident, now: float) -> list[StepView]:
    """Remediation steps with their state; ``pending`` when one waits for a person."""
    try:
        records, approvals = steps_of(incident), approvals_of(incident)
    except UnreadableRecord:  # logged by the reader; the timeline still tells the story
        return []
    return [_step(record, approvals.get(key), now) for key, record in records.items()]


def _step(record: StepRecord, approval: ApprovalRecord | None, now: float) -> StepView:
    verify = ""
    if record.verify is not None:
        last = record.verify.last_value
        seen = "" if last is None else f", last value {last:.6g}"
        verify = f"{record.verify.state.value} after {record.verify.checks} check(s){seen}"
    rollback = ""
    if record.rollback is not None:
        rollback = record.rollback.state.value + (
            f": {record.rollback.reason}" if record.rollback.reason else ""
        )
    pending = (
        approval is not None
        and approval.state is ApprovalState.PENDING
        and approval.expires_at > now
    )
    return StepView(
        key=record.key,
        playbook=record.playbook,
        kind=record.kind,
        description=record.description,
        mode=record.mode.value,
        state=record.state.value,
        reason=record.reason,
        call=str((record.call or {}).get("text", "")),
        result=record.result.summary if record.result else "",
        output=record.result.output if record.result else "",
        verify=verify,
        rollback=rollback,
        approval=approval,
        pending=pending,
    )


@dataclass(frozen=True)
class NarrativeView:
    text: str
    source: str
    generated: str
    facts: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def narrative(incident: Incident) -> NarrativeView | None:
    """The narrative and, for an LLM's, the facts it was checked against."""
    held = narrative_of(incident)
    if held is None or not held.text.strip():
        return None
    return NarrativeView(
        text=held.text,
        source=held.source,
        generated="" if held.generated_at is None else utc(held.generated_at),
        facts=[f"{name}: {value}" for name, value in held.facts.items()][:50],
        dropped=_lines(held.dropped),
    )


def _lines(value: object) -> list[str]:
    """Fact rows or dropped sentences, each one line of text, whatever their shape."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    out = []
    for item in value[:50]:
        if isinstance(item, Mapping):
            out.append("; ".join(f"{k}: {v}" for k, v in item.items()))
        else:
            out.append(str(item))
    return out


@dataclass(frozen=True)
class SilenceView:
    id: str
    source: str
    by: str
    until: str
    expired: bool
    url: str | None


def silences(incident: Incident) -> list[SilenceView]:
    return [
        SilenceView(
            id=record.id,
            source=record.source,
            by=record.by,
            until=record.until,
            expired=not record.active,
            url=web_link(record.url or None),
        )
        for record in silences_of(incident)
    ]


@dataclass(frozen=True)
class EventView:
    at: str
    actor: str
    kind: str
    message: str


def timeline(events: Sequence[Event]) -> list[EventView]:
    return [EventView(utc(e.at), e.actor, e.kind, e.message) for e in events]


def outside_links(incident: Incident) -> list[Link]:
    """The incident's Slack thread and PagerDuty incident, where they are known."""
    out = []
    if url := web_link(permalink_of(incident)):
        out.append(Link("Slack thread", url))
    if url := web_link(page_state_of(incident).html_url):
        out.append(Link("PagerDuty incident", url))
    return out


def can_act(incident: Incident) -> bool:
    return incident.status is not Status.RESOLVED
