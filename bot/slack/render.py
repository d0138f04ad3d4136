"""Block Kit for an incident's Slack message: everything it shows comes from current state.

The message is re-rendered from the incident (status, alerts, feature data) on every
change and replaces itself in place, so it always tells the truth. Every string that
came from an alert, a diagnostic, a narrative or a person goes through ``mrkdwn.escape``,
and a link that came with an alert is a link only to a configured host (``Extras.links``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core.incidents import Incident, Status
from bot.diagnostics.summary import finding, outcome, tally
from bot.notify.links import CONSOLE_TITLE, HIDDEN, NO_LINKS, LinkPolicy, is_web_link
from bot.pagerduty.state import state_of as page_state_of
from bot.records.diagnostics import diagnostics_of
from bot.records.incident import truncated_of
from bot.records.narrative import NarrativeRecord, narrative_of
from bot.records.silences import SilenceRecord, silences_of
from bot.records.steps import StepView, approval_views, step_views
from bot.records.targets import TargetState, targets_of
from bot.settings import Severity
from bot.silences.service import new_silence_url
from bot.slack import mrkdwn
from bot.slack.mrkdwn import clip, escape

JsonDict = dict[str, Any]

SEVERITY_ICON = {
    Severity.P0: ":rotating_light:",
    Severity.P1: ":red_circle:",
    Severity.P2: ":large_orange_circle:",
    Severity.P3: ":large_blue_circle:",
}
STATUS_TEXT = {
    Status.TRIGGERED: "TRIGGERED",
    Status.ACKNOWLEDGED: "ACKNOWLEDGED",
    Status.RESOLVED: "RESOLVED",
}
_QUIET_LABELS = frozenset({"alertname", "severity"})
_MAX_SECTION = 2900


@dataclass(frozen=True)
class Rendered:
    text: str  # the notification / fallback text
    blocks: list[JsonDict]

    def digest(self) -> str:
        return json.dumps([self.text, self.blocks], sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class Extras:
    """What the message shows beyond the incident itself."""

    mentions: Sequence[str] = ()
    previous: tuple[int, str | None] | None = None  # (incident id, permalink) when reopened
    playbook_links: Sequence[tuple[str, str]] = ()
    can_rerun: bool = False
    can_approve: bool = False
    buttons: bool = True
    extra_notes: Sequence[str] = field(default_factory=tuple)
    alertmanager_url: str = ""  # the silence link's base unless the group's own is allowed
    links: LinkPolicy = NO_LINKS  # where links that came with the alert may point
    max_silence: float | None = None  # slack.max_silence: longer menu choices are left out


def mrkdwn_text(text: str) -> JsonDict:
    """A mrkdwn text object that Slack shows as written: ``verbatim`` stops it turning bare
    URLs, channel names and mentions in alert text into links (links alertpilot means
    are written ``<url|title>``, which still work)."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def section(text: str) -> JsonDict:
    return {"type": "section", "text": mrkdwn_text(clip(text, _MAX_SECTION))}


def context(parts: Sequence[str]) -> JsonDict:
    return {"type": "context", "elements": [mrkdwn_text(clip(p, 2000)) for p in parts[:10]]}


def headline(incident: Incident) -> str:
    """``P1 TRIGGERED: #12 HighErrorRate (service=checkout)``, escaped."""
    return (
        f"{incident.severity.value} {STATUS_TEXT[incident.status]}: "
        f"#{incident.id} {escape(clip(incident.title, 150))}"
    )


def incident_message(incident: Incident, extras: Extras) -> Rendered:
    icon = SEVERITY_ICON[incident.severity]
    title = f"#{incident.id} {escape(clip(incident.title, 200))}"
    title = f"~{title}~" if incident.status is Status.RESOLVED else f"*{title}*"
    top = f"{icon} *{incident.severity.value} · {STATUS_TEXT[incident.status]}*  {title}"
    mentions = ""
    if extras.mentions and incident.severity is not Severity.P3:
        mentions = " ".join(mrkdwn.mention(m) for m in extras.mentions) + " "
    lines = [mentions + top, escape(clip(incident.summary, 600))]
    if incident.status is Status.ACKNOWLEDGED and incident.acknowledged_at is not None:
        who = escape(incident.acknowledged_by or "someone")
        lines.append(f":eyes: Acknowledged by {who} · {when(incident.acknowledged_at)}")
    if incident.status is Status.RESOLVED and incident.resolved_at is not None:
        lines.append(f":white_check_mark: *Resolved* · {when(incident.resolved_at)}")
    lines += _targets(targets_of(incident), incident.status)
    truncated = truncated_of(incident)
    if truncated is not None and incident.status is not Status.RESOLVED:
        lines.append(
            f":scissors: Alertmanager left out {truncated.alerts} alert(s) of this group"
            " (max_alerts): it resolves only when a delivery that leaves none out says so"
        )
    if extras.previous is not None:
        prev_id, permalink = extras.previous
        target = mrkdwn.link(permalink, f"incident #{prev_id}") if permalink else f"#{prev_id}"
        lines.append(f":repeat: Reopened: this group fired before as {target}")
    blocks: list[JsonDict] = [section("\n".join(lines)), _facts(incident)]
    labels = _labels(incident)
    if labels:
        blocks.append(context(labels))
    for part in (
        _diagnostics(diagnostics_of(incident) or []),
        _remediations(step_views(incident)),
        _narrative(narrative_of(incident)),
        _silences(silences_of(incident)),
    ):
        if part:
            blocks.append(part)
    blocks.extend(section(note) for note in extras.extra_notes)
    links = _links(incident, extras)
    if links:
        blocks.append(context([" · ".join(links)]))
    if extras.buttons and incident.status is not Status.RESOLVED:
        blocks.extend(_actions(incident, extras))
    return Rendered(text=mentions + headline(incident), blocks=blocks[:50])


def when(epoch: float) -> str:
    """A time as Slack shows it in each reader's own time zone (UTC as the fallback)."""
    from datetime import UTC, datetime

    fallback = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return mrkdwn.date(epoch, fallback)


def _targets(targets: TargetState, status: Status) -> list[str]:
    """The response targets (``bot.targets``): the escalation level reached, when the next
    level is due, and the resolve-by time or that it was missed."""
    lines = []
    if targets.escalations:
        last = targets.escalations[-1]
        reason = escape(clip(last.reason, 200))
        lines.append(
            f":rotating_light: *Escalated to level {last.level}* · {when(last.at)}: {reason}"
        )
    parts = []
    ack_due = targets.ack_due
    if status is Status.TRIGGERED and ack_due is not None:
        parts.append(f"Acknowledge by {when(ack_due)}")
    resolve_by = targets.resolve_by
    if resolve_by is not None and targets.resolve_missed_at is not None:
        parts.append(f":warning: *Resolve target missed* (by {when(resolve_by)})")
    elif resolve_by is not None and status is not Status.RESOLVED:
        parts.append(f"Resolve by {when(resolve_by)}")
    if parts:
        lines.append(":stopwatch: " + " · ".join(parts))
    return lines


def _facts(incident: Incident) -> JsonDict:
    firing = len(incident.firing)
    fields = [
        f"*Severity*\n{incident.severity.value}",
        f"*Status*\n{incident.status.value}",
        f"*Alerts*\n{firing} firing of {len(incident.alerts)}",
        f"*Opened*\n{when(incident.opened_at)}",
    ]
    if incident.playbook:
        fields.append(f"*Playbook*\n{mrkdwn.code(incident.playbook, 80)}")
    return {"type": "section", "fields": [mrkdwn_text(f) for f in fields]}


def _labels(incident: Incident) -> list[str]:
    """The labels that matter: the group's, the common ones, and what tells alerts apart."""
    shown: dict[str, str] = {}
    for source in (incident.group_labels, incident.common_labels):
        for key, value in source.items():
            if key not in _QUIET_LABELS:
                shown.setdefault(key, value)
    parts = [" ".join(mrkdwn.code(f"{k}={v}", 120) for k, v in list(shown.items())[:12])]
    distinct: list[str] = []
    for alert in incident.firing[:8]:
        own = {k: v for k, v in alert.labels.items() if k not in incident.common_labels}
        if own:
            distinct.append(", ".join(f"{k}={v}" for k, v in sorted(own.items())[:3]))
    if distinct:
        more = len(incident.firing) - len(distinct)
        tail = f" and {more} more" if more > 0 else ""
        parts.append("Firing: " + " ".join(mrkdwn.code(d, 100) for d in distinct) + tail)
    return [p for p in parts if p]


def _diagnostics(items: Sequence[Mapping[str, Any]]) -> JsonDict | None:
    """Each step once: failed, passed or not checked (with why), never an error shown as
    healthy; the count of all three first."""
    if not items:
        return None
    lines = [f"*Diagnostics*: {escape(clip(tally(items).line(), 300))}"]
    icons = {
        "failed": ":x:",
        "passed": ":white_check_mark:",
        "not_checked": ":warning:",
        "answered": ":information_source:",
    }
    for item in items[:10]:
        name = escape(clip(str(item.get("label") or item.get("name") or "?"), 80))
        line = f"{icons[outcome(item)]} *{name}*: {escape(clip(finding(item), 160))}"
        lines.append(line)
    if len(items) > 10:
        lines.append(f"…and {len(items) - 10} more")
    return section("\n".join(lines))


_STATE_ICON = {
    "proposed": ":bulb:",
    "pending": ":hourglass_flowing_sand:",
    "pending_approval": ":hourglass_flowing_sand:",
    "queued": ":clock1:",
    "verifying": ":mag:",
    "suggested": ":bulb:",
    "dry_run": ":test_tube:",
    "approval_required": ":hourglass_flowing_sand:",
    "approved": ":thumbsup:",
    "rejected": ":no_entry_sign:",
    "running": ":gear:",
    "succeeded": ":heavy_check_mark:",
    "verified": ":white_check_mark:",
    "failed": ":x:",
    "blocked": ":no_entry:",
    "skipped": ":fast_forward:",
}


def _remediations(steps: Sequence[StepView]) -> JsonDict | None:
    if not steps:
        return None
    lines = ["*Remediation*"]
    for info in steps[:8]:
        step, state = info.key, info.current or "unknown"
        icon = _STATE_ICON.get(state, ":small_blue_diamond:")
        reason = info.reason or info.guard
        if info.guard == "not_applicable" and reason:  # "not applicable: needs label"
            lines.append(f":heavy_minus_sign: {mrkdwn.code(step, 60)} {escape(clip(reason, 160))}")
            continue
        line = f"{icon} {mrkdwn.code(step, 60)} {escape(state)}"
        if reason:
            line += f" — {escape(clip(reason, 160))}"
        lines.append(line)
    return section("\n".join(lines))


def pending_approvals(incident: Incident) -> list[str]:
    """Steps waiting for a human decision, from the remediation feature's data."""
    return [
        view.key for view in approval_views(incident) if (view.current or "pending") == "pending"
    ]


def _narrative(narrative: NarrativeRecord | None) -> JsonDict | None:
    if narrative is None or not narrative.text:
        return None
    source = "written by the LLM" if narrative.source == "llm" else "from the template"
    text = escape(clip(narrative.text, 2400))
    return section(f"*What happened* _({source})_\n{text}")


def _silences(records: Sequence[SilenceRecord]) -> JsonDict | None:
    """Active silences, those made together (one per alert: same end, same person) on one
    line: the last five such lines."""
    groups: dict[tuple[str, str], list[str]] = {}
    for item in records:
        if not item.id or item.expired_at:
            continue
        label = "until resolved" if item.expire_on_resolve else f"until {item.until or '?'}"
        who = f" by {escape(item.by)}" if item.by else ""
        groups.setdefault((label, who), []).append(item.url)
    parts = []
    for (label, who), urls in list(groups.items())[-5:]:
        if len(urls) == 1:
            links = mrkdwn.link(urls[0], "silence")
        else:
            numbered = [mrkdwn.link(url, str(n)) for n, url in enumerate(urls[:10], 1)]
            more = ", …" if len(urls) > 10 else ""
            links = f"{len(urls)} silences ({', '.join(numbered)}{more})"
        parts.append(f"{links} {escape(label)}{who}")
    return context([":mute: Silenced: " + "; ".join(parts)]) if parts else None


def _links(incident: Incident, extras: Extras) -> list[str]:
    """Links to the incident's console page, the alert's sources, the playbook's,
    Alertmanager and PagerDuty.

    Those that came with the alert (generator URL, Grafana's, ``runbook_url``, the
    group's external URL) are links only on an allowed host (``bot.notify.links``);
    elsewhere their title stays, saying the link was hidden."""
    policy = extras.links
    links: list[str] = []
    console = policy.console_url(incident.id)
    if console and mrkdwn.safe_url(console):
        links.append(mrkdwn.link(console, CONSOLE_TITLE))

    def offered(url: str, title: str) -> None:
        if policy.allows(url) and mrkdwn.safe_url(url):
            links.append(mrkdwn.link(url, title))
        elif is_web_link(url):
            links.append(f"{escape(title)} _({HIDDEN})_")

    alerts = incident.firing or list(incident.alerts)
    first = alerts[0] if alerts else None
    if first is not None and first.generator_url:
        offered(first.generator_url, "Grafana rule" if first.links else "Prometheus graph")
    for title, url in (first.links if first is not None else {}).items():  # Grafana's
        offered(url, title)
    annotations = first.annotations if first is not None else {}
    runbook = incident.common_annotations.get("runbook_url") or annotations.get("runbook_url")
    if runbook:  # a path is resolved against links.runbook_base_url
        offered(policy.resolve(runbook) or runbook, "Runbook")
    for title, url in extras.playbook_links[:4]:  # from the playbook's YAML: configuration
        resolved = policy.resolve(url)
        if resolved and mrkdwn.safe_url(resolved):
            links.append(mrkdwn.link(resolved, clip(title, 40)))
    if incident.external_url:
        offered(incident.external_url, "Alertmanager")
    own = incident.external_url if policy.allows(incident.external_url) else ""
    silence = new_silence_url(incident, own or extras.alertmanager_url)
    if silence and mrkdwn.safe_url(silence):
        links.append(mrkdwn.link(silence, "Silence in Alertmanager"))
    pd_url = page_state_of(incident).html_url
    if pd_url and mrkdwn.safe_url(pd_url):
        links.append(mrkdwn.link(pd_url, "PagerDuty incident"))
    return links


def button(text: str, action_id: str, value: str, style: str | None = None) -> JsonDict:
    out: JsonDict = {
        "type": "button",
        "text": {"type": "plain_text", "text": clip(text, 75)},
        "action_id": action_id,
        "value": value,
    }
    if style:
        out["style"] = style
    return out


SILENCE_CHOICES = {"1h": "Silence 1 h", "4h": "Silence 4 h", "resolved": "Until resolved"}
_SILENCE_SECONDS = {"1h": 3600.0, "4h": 4 * 3600.0}


def silence_choices(max_silence: float | None) -> dict[str, str]:
    """The menu's choices that ``slack.max_silence`` allows; "until resolved" always is
    (its Alertmanager end is held to the cap)."""
    return {
        choice: label
        for choice, label in SILENCE_CHOICES.items()
        if max_silence is None or _SILENCE_SECONDS.get(choice, 0.0) <= max_silence
    }


def _actions(incident: Incident, extras: Extras) -> list[JsonDict]:
    ref = str(incident.id)
    row: list[JsonDict] = []
    if incident.status is Status.TRIGGERED:
        row.append(button("Acknowledge", "ap_ack", ref, "primary"))
    row.append(button("Resolve", "ap_resolve", ref))
    row.append(button("Escalate", "ap_escalate", ref, "danger"))
    row.append(
        {
            "type": "static_select",
            "action_id": "ap_silence",
            "placeholder": {"type": "plain_text", "text": "Silence…"},
            "options": [
                {"text": {"type": "plain_text", "text": label}, "value": f"{ref}:{choice}"}
                for choice, label in silence_choices(extras.max_silence).items()
            ],
        }
    )
    if extras.can_rerun:
        row.append(button("Re-run diagnostics", "ap_rerun", ref))
    blocks: list[JsonDict] = [{"type": "actions", "block_id": f"incident-{ref}", "elements": row}]
    if extras.can_approve:
        approvals: list[JsonDict] = []
        for step in pending_approvals(incident)[:12]:
            value = f"{ref}:{step}"
            approvals.append(button(f"Approve {step}", "ap_approve", value, "primary"))
            approvals.append(button(f"Reject {step}", "ap_reject", value, "danger"))
        if approvals:
            blocks.append(section("*Waiting for approval*"))
            for start in range(0, len(approvals), 24):
                blocks.append({"type": "actions", "elements": approvals[start : start + 24]})
    return blocks
