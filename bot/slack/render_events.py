"""Thread replies for timeline events, and the storm roll-up message.

Only events a responder wants to read in the thread get a reply (diagnostics done,
remediation steps, approvals, escalations, acknowledgements, resolution, notes); the
rest (a single diagnostic, a narrative, the playbook match) only update the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.core.incidents import Event, EventKind, Incident, IncidentBrief, Status
from bot.diagnostics.summary import tally
from bot.notify.links import LinkPolicy
from bot.playbook.model import Playbook
from bot.records.diagnostics import diagnostics_of
from bot.slack import mrkdwn
from bot.slack.mrkdwn import clip, escape
from bot.slack.render import SEVERITY_ICON, Rendered, context, section

_REPLY_ICON: dict[str, str] = {
    EventKind.DIAGNOSTICS_DONE: ":mag:",
    EventKind.REMEDIATION: ":wrench:",
    EventKind.APPROVAL: ":ballot_box_with_check:",
    EventKind.ESCALATED: ":rotating_light:",
    EventKind.PAGE: ":pager:",
    EventKind.ACKNOWLEDGED: ":eyes:",
    EventKind.UNACKNOWLEDGED: ":leftwards_arrow_with_hook:",
    EventKind.RESOLVED: ":white_check_mark:",
    EventKind.REOPENED: ":repeat:",
    EventKind.SEVERITY: ":arrow_up:",
    EventKind.ALERT_FIRING: ":fire:",
    EventKind.NOTE: ":memo:",
}


def runbook_reply(playbook: Playbook, links: LinkPolicy) -> str | None:
    """The matched playbook's runbook, once in the incident's thread: the order to work in
    and the checklist of what only people can do (the call, the status page, a key to
    rotate), with the playbook's links. None when the playbook has no runbook."""
    if not playbook.runbook.strip():
        return None
    lines = [
        f":clipboard: *Runbook: {escape(playbook.name)}* (what to do, and what only people can)",
        escape(clip(playbook.runbook.strip(), 2800)),
    ]
    lines += [
        f"• {mrkdwn.link(links.resolve(item.url), item.title)}" for item in playbook.links[:5]
    ]
    return "\n".join(lines)


def is_thread_worthy(kind: str) -> bool:
    return kind in _REPLY_ICON


def event_reply(
    event: Event, incident: Incident, *, new_incident_link: str | None = None
) -> str | None:
    """The thread reply for an event, or None when the event only updates the message."""
    icon = _REPLY_ICON.get(event.kind)
    if icon is None:
        return None
    text = escape(clip(event.message, 1500))
    if event.kind == EventKind.DIAGNOSTICS_DONE:
        text = _diagnostics_summary(incident) or text
    elif event.kind == EventKind.REOPENED:
        new_id = event.data.get("new_incident_id")
        target = (
            mrkdwn.link(new_incident_link, f"incident #{new_id}")
            if new_incident_link
            else (f"incident #{new_id}")
        )
        text = f"This group fired again as {target}"
    elif event.kind in (EventKind.ACKNOWLEDGED, EventKind.RESOLVED) and event.actor:
        text = escape(clip(event.message, 600))
    return f"{icon} {text}"


def _diagnostics_summary(incident: Incident) -> str | None:
    results = diagnostics_of(incident)
    if not results:
        return None
    failing = [r for r in results if r.get("passed") is False]
    lines = [f"Diagnostics done: {escape(clip(tally(results).line(), 600))}"]
    for item in failing[:5]:
        name = escape(clip(str(item.get("label") or item.get("name") or "?"), 80))
        detail = escape(clip(str(item.get("text") or item.get("value") or ""), 200))
        lines.append(f"• *{name}*: {detail}")
    return "\n".join(lines)


ROLLUP_SHOWN = 40  # incidents listed by name in a roll-up; the rest are counted


def rollup_message(
    channel_incidents: Sequence[IncidentBrief],
    permalinks: Mapping[int, str | None],
    *,
    window: float,
    limit: int = ROLLUP_SHOWN,
) -> Rendered:
    """One message standing for a storm of incidents in a channel; their own are in its thread."""
    total = len(channel_incidents)
    open_count = sum(1 for i in channel_incidents if i.status is not Status.RESOLVED)
    head = (
        f":thunder_cloud_and_rain: *Alert storm: {total} incidents* "
        f"(more than the storm threshold within {window:g} s) · {open_count} open"
    )
    lines: list[str] = []
    size = 0
    for incident in channel_incidents[:limit]:
        title = f"#{incident.id} {escape(clip(incident.title, 90))}"
        if incident.status is Status.RESOLVED:
            title = f"~{title}~"
        ref = (
            mrkdwn.link(permalinks.get(incident.id), "open") if permalinks.get(incident.id) else ""
        )
        line = (
            f"{SEVERITY_ICON[incident.severity]} {incident.severity.value} {title} "
            f"· {incident.status.value} {ref}".rstrip()
        )
        if size + len(line) > 2700:  # a section holds 3000 characters
            break
        lines.append(line)
        size += len(line) + 1
    if total > len(lines):
        lines.append(f"…and {total - len(lines)} more")
    blocks = [section(head), section("\n".join(lines) or "(none yet)")]
    blocks.append(context(["Each incident's own message is in this thread."]))
    return Rendered(text=f"Alert storm: {total} incidents", blocks=blocks)
