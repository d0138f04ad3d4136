"""A postmortem draft, built from an incident's timeline when it resolves.

Nobody remembers at the end of a long night when the page went out or who acknowledged
it; the timeline does. The draft lays out what it holds (the key events with their
times, what the diagnostics found, the remediation taken, who acknowledged and who
resolved, the time to each and the response targets) and the sections a postmortem
still needs a person to write. Slack posts it in the incident's thread (P0/P1 by
default, ``response.postmortem_severities``). Everything that came from an alert or a
person is escaped for Slack's mrkdwn.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bot.core.durations import format_duration
from bot.core.incidents import Event, EventKind, Incident
from bot.diagnostics.summary import finding, outcome, tally
from bot.records.diagnostics import diagnostics_of
from bot.records.steps import step_views
from bot.records.targets import TargetState, targets_of
from bot.slack.mrkdwn import clip, escape

MAX_TEXT = 3900  # Slack shows a message up to about 4,000 characters before cutting it
MAX_TIMELINE = 25
KEY_EVENTS = frozenset(
    {
        EventKind.OPENED,
        EventKind.REOPENED,
        EventKind.SEVERITY,
        EventKind.ALERT_FIRING,
        EventKind.DIAGNOSTICS_DONE,
        EventKind.REMEDIATION,
        EventKind.APPROVAL,
        EventKind.ESCALATED,
        EventKind.PAGE,
        EventKind.ACKNOWLEDGED,
        EventKind.UNACKNOWLEDGED,
        EventKind.NOTE,
        EventKind.RESOLVED,
    }
)
CHECKLIST = (
    "Summary: what happened and its impact (who was affected, how many, for how long)",
    "Timeline: checked, with what people did outside alertpilot",
    "Root cause, and what triggered it",
    "Detection: did the alert fire early enough; was the runbook right",
    "Response: what helped, what slowed it down (acknowledgement, escalations)",
    "Action items, each with an owner and a due date",
    "Lessons learned",
)


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M")


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _first(timeline: Sequence[Event], kind: str) -> Event | None:
    return next((e for e in timeline if e.kind == kind), None)


def _response(incident: Incident) -> list[str]:
    """Who acknowledged and resolved, how long each took, and the targets."""
    opened = incident.opened_at
    acked = _first(incident.timeline, EventKind.ACKNOWLEDGED)
    resolved = _first(incident.timeline, EventKind.RESOLVED)
    lines = []
    if acked is not None:
        lines.append(
            f"*Acknowledged* after {format_duration(max(0.0, acked.at - opened))}:"
            f" {escape(clip(acked.message, 200))}"
        )
    else:
        lines.append("*Acknowledged*: never (resolved without an acknowledgement)")
    if resolved is not None:
        lines.append(
            f"*Resolved* after {format_duration(max(0.0, resolved.at - opened))}:"
            f" {escape(clip(resolved.message, 200))}"
        )
    return lines + _targets(targets_of(incident), resolved, opened)


def _targets(targets: TargetState, resolved: Event | None, opened: float) -> list[str]:
    parts = []
    if targets.ack_within is not None:
        met = targets.ack_missed_at is None
        parts.append(
            f"acknowledge within {format_duration(targets.ack_within)}: "
            f"{'met' if met else 'missed'}"
        )
    resolve_within = targets.resolve_within
    if resolve_within is not None:
        met = resolved is not None and resolved.at - opened <= resolve_within
        parts.append(
            f"resolve within {format_duration(resolve_within)}: {'met' if met else 'missed'}"
        )
    if escalations := targets.escalations:
        top = max(e.level for e in escalations)
        parts.append(f"escalated {len(escalations)} time(s), to level {top}")
    return [f"*Targets*: {'; '.join(parts)}"] if parts else []


def _timeline(timeline: Sequence[Event]) -> list[str]:
    key = [e for e in timeline if e.kind in KEY_EVENTS]
    shown = key
    if len(key) > MAX_TIMELINE:  # the start and the end tell the most
        head = MAX_TIMELINE * 2 // 3
        shown = [*key[:head], *key[-(MAX_TIMELINE - head) :]]
    lines = []
    for n, event in enumerate(shown):
        if len(key) > MAX_TIMELINE and n == MAX_TIMELINE * 2 // 3:
            lines.append(f"• … {len(key) - MAX_TIMELINE} more events (`/alertpilot show`)")
        named = event.actor == "alertpilot" or event.actor in event.message
        who = "" if named else f" ({escape(clip(event.actor, 40))})"
        lines.append(f"• {_clock(event.at)} {escape(clip(event.message, 160))}{who}")
    return lines


def _diagnostics(incident: Incident) -> list[str]:
    """Failed and not checked first: what the checks found, never a skipped one as fine."""
    rows = diagnostics_of(incident) or []
    if not rows:
        return ["• none ran"]
    rank = {"failed": 0, "not_checked": 1, "answered": 2, "passed": 3}
    mark = {"failed": "FAIL", "not_checked": "NOT CHECKED", "answered": "INFO", "passed": "ok"}
    lines = [f"• {escape(clip(tally(rows).line(), 200))}"]
    for row in sorted(rows, key=lambda r: rank[outcome(r)])[:6]:
        name = escape(clip(str(row.get("label") or row.get("name") or "?"), 60))
        lines.append(f"• {mark[outcome(row)]} {name}: {escape(clip(finding(row), 140))}")
    return lines


def _remediation(incident: Incident) -> list[str]:
    steps = step_views(incident)
    if not steps:
        return ["• none"]
    lines = []
    for step in steps[:8]:
        detail = step.result.summary if step.result is not None else step.reason
        tail = f": {escape(clip(detail, 140))}" if detail else ""
        lines.append(f"• `{escape(clip(step.key, 60))}` {escape(step.state or '?')}{tail}")
    return lines


def postmortem_draft(incident: Incident) -> str:
    """The draft, as one Slack message (mrkdwn), at most ``MAX_TEXT`` characters."""
    head = (
        f":memo: *Postmortem draft for #{incident.id}* "
        f"{escape(clip(incident.title, 150))} ({incident.severity.value}): a"
        f" {incident.severity.value} needs a postmortem. The timeline below is alertpilot's;"
        " complete the sections at the end."
    )
    parts = [
        head,
        f"*Opened* {_day(incident.opened_at)}",
        *_response(incident),
        "*Timeline* (UTC)",
        *_timeline(incident.timeline),
        "*What the diagnostics found*",
        *_diagnostics(incident),
        "*Remediation taken*",
        *_remediation(incident),
        "*Postmortem checklist*",
        *(f"☐ {item}" for item in CHECKLIST),
    ]
    return clip("\n".join(parts), MAX_TEXT)
