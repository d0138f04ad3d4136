"""What alertpilot sends to the Events API v2: built from the incident, nothing else.

A trigger carries the incident's stable key as ``dedup_key`` (so a repeat can never open a
second PagerDuty incident), the severity mapped from P0-P3, a summary of at most 1,024
characters, ``source``/``component``/``group``/``class`` from the alert labels,
``custom_details`` (labels, firing alerts, diagnostic highlights, a narrative excerpt)
and links (the Slack message, the Prometheus graph, the runbook). A link that came with
the alert goes only to a configured host (``bot.notify.links``); ``custom_details``
names the ones left out (``hidden_links``). A re-page for a higher escalation level
(``repage_event``) is a trigger of its own: a dedup_key of its own (``-L2``), the
severity raised one step, ``[RE-PAGE level 2]`` in front of the summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.core.incidents import AlertRecord, Incident
from bot.diagnostics.summary import finding, outcome, tally
from bot.notify.links import CONSOLE_TITLE, HIDDEN, NO_LINKS, LinkPolicy
from bot.playbook.model import Playbook
from bot.records.diagnostics import diagnostics_of
from bot.records.narrative import narrative_of
from bot.records.slack import permalink_of
from bot.settings import Severity

SEVERITY: dict[Severity, str] = {
    Severity.P0: "critical",
    Severity.P1: "error",
    Severity.P2: "warning",
    Severity.P3: "info",
}
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
MAX_LINKS = 10
MAX_HIGHLIGHTS = 8
MAX_NARRATIVE = 1000
MAX_ALERTS = 20

# Label names tried, in order, for each payload field PagerDuty groups and routes on.
SOURCE_LABELS = ("instance", "pod", "host", "service", "job")
COMPONENT_LABELS = ("service", "component", "app", "job")
GROUP_LABELS = ("namespace", "cluster", "team", "env")


def dedup_key(incident: Incident) -> str:
    """The incident's key, shortened (keeping it unique) only if PagerDuty's limit needs it."""
    if len(incident.key) <= MAX_DEDUP_KEY:
        return incident.key
    digest = hashlib.sha256(incident.key.encode()).hexdigest()
    return f"{incident.key[: MAX_DEDUP_KEY - 65]}-{digest}"


def clip(text: str, limit: int, *, one_line: bool = True) -> str:
    """At most ``limit`` characters, cut at a word boundary when one is near."""
    text = " ".join(text.split()) if one_line else text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _first(labels: Mapping[str, str], names: Iterable[str]) -> str | None:
    return next((labels[name] for name in names if labels.get(name)), None)


def _alert_text(alert: AlertRecord) -> str:
    name = alert.labels.get("alertname", "(no alertname)")
    detail = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
    return f"{name} {{{detail}}}" if detail else name


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def diagnostic_highlights(incident: Incident) -> list[str]:
    """The count, then failed and not checked diagnostics first, each as one line:
    ``FAIL 5xx share: 12%``, ``NOT CHECKED error ratio: not checked (Prometheus
    unreachable)``; a check that did not run is never shown as ok."""
    rows = diagnostics_of(incident) or []
    rank = {"failed": 0, "not_checked": 1, "answered": 2, "passed": 3}
    mark = {"failed": "FAIL", "not_checked": "NOT CHECKED", "answered": "INFO", "passed": "ok"}
    out = [clip(f"checks: {tally(rows).line()}", 300)] if rows else []
    for item in sorted(rows, key=lambda item: rank[outcome(item)])[: MAX_HIGHLIGHTS - 1]:
        name = item.get("label") or item.get("name") or "diagnostic"
        out.append(clip(f"{mark[outcome(item)]} {name}: {finding(item)}", 300))
    return out


def narrative_excerpt(incident: Incident) -> str | None:
    narrative = narrative_of(incident)
    if narrative is None or not narrative.text.strip():
        return None
    return clip(narrative.text, MAX_NARRATIVE, one_line=False)


def _http(url: object) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "http://"))


def links_for(
    incident: Incident, playbooks: Sequence[Playbook], policy: LinkPolicy
) -> tuple[list[dict[str, str]], list[str]]:
    """Console page, Slack message, Prometheus graph, runbook, playbook and Alertmanager
    links; http(s) only (a runbook path resolved against ``policy``'s base), no repeats.
    Those that came with the alert only on a host ``policy`` allows: the titles of the
    others come back second, to say they were hidden."""
    found: list[tuple[str, str]] = []
    console = policy.console_url(incident.id)
    if _http(console):
        found.append((str(console), CONSOLE_TITLE))
    permalink = permalink_of(incident)
    if permalink is not None and _http(permalink):
        found.append((permalink, "Slack thread"))
    offered: list[tuple[str, str]] = []
    generator = next((a.generator_url for a in incident.alerts if _http(a.generator_url)), None)
    if generator:
        offered.append((generator, "Prometheus graph"))
    annotations = [incident.common_annotations, *(a.annotations for a in incident.alerts)]
    runbook = next(  # a path is resolved against links.runbook_base_url
        (
            resolved
            for a in annotations
            for k in ("runbook_url", "runbook")
            if a.get(k) and (resolved := policy.resolve(a[k]))
        ),
        None,
    )
    if runbook:
        offered.append((runbook, "Runbook"))
    shown, hidden = policy.split(offered)
    found += shown
    for playbook in playbooks:  # the playbook's YAML: configuration, not alert input
        found += [
            (resolved, link.title)
            for link in playbook.links
            if (resolved := policy.resolve(link.url))
        ]
    if _http(incident.external_url):
        allowed, left_out = policy.split([(incident.external_url, "Alertmanager")])
        found += allowed
        hidden += left_out
    seen: set[str] = set()
    out = []
    for href, text in found:
        if href not in seen:
            seen.add(href)
            out.append({"href": href, "text": clip(text, 100)})
    return out[:MAX_LINKS], hidden


def trigger_event(
    incident: Incident,
    *,
    playbooks: Sequence[Playbook],
    reason: str,
    links: LinkPolicy = NO_LINKS,
) -> dict[str, Any]:
    """The Events API v2 trigger for ``incident`` (routing key added by the client);
    ``links``: where the links that came with the alert may point (nowhere by default)."""
    labels = dict(incident.common_labels)
    firing = incident.firing or list(incident.alerts)
    for alert in firing[:1]:  # common labels may be sparse: fall back on the first alert's
        labels = {**alert.labels, **labels}
    title = incident.title
    summary = f"[{incident.severity.value}] {title}"
    if incident.summary and incident.summary != title:
        summary += f": {incident.summary}"
    details: dict[str, Any] = {
        "incident": f"#{incident.id}",
        "severity": incident.severity.value,
        "status": incident.status.value,
        "why_paged": reason,
        "labels": dict(incident.common_labels),
        "firing": [_alert_text(a) for a in incident.firing[:MAX_ALERTS]],
    }
    if incident.playbook:
        details["playbook"] = incident.playbook
    description = incident.common_annotations.get("description")
    if description:
        details["description"] = clip(description, MAX_NARRATIVE)
    if highlights := diagnostic_highlights(incident):
        details["diagnostics"] = highlights
    if narrative := narrative_excerpt(incident):
        details["narrative"] = narrative
    shown, hidden = links_for(incident, playbooks, links)
    if hidden:
        details["hidden_links"] = [f"{title} ({HIDDEN})" for title in hidden]
    payload: dict[str, Any] = {
        "summary": clip(summary, MAX_SUMMARY),
        "source": _first(labels, SOURCE_LABELS) or incident.receiver or "alertpilot",
        "severity": SEVERITY[incident.severity],
        "timestamp": _iso(incident.opened_at),
        "custom_details": details,
    }
    for field, value in (
        ("component", _first(labels, COMPONENT_LABELS)),
        ("group", _first(labels, GROUP_LABELS)),
        ("class", labels.get("alertname")),
    ):
        if value:
            payload[field] = clip(value, 255)
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": dedup_key(incident),
        "payload": payload,
        "client": "alertpilot",
    }
    if shown:
        event["links"] = shown
    return event


def follow_event(incident: Incident, action: str, *, key: str | None = None) -> dict[str, Any]:
    """An ``acknowledge`` or ``resolve`` event for the alert the trigger opened (or for
    the re-page whose dedup ``key`` is given)."""
    return {"event_action": action, "dedup_key": key or dedup_key(incident)}


# A re-page raises PagerDuty's severity one step (its urgency follows the service's
# rules): an unacknowledged P1 ("error") re-pages as "critical".
RAISED = {"info": "warning", "warning": "error", "error": "critical", "critical": "critical"}
REPAGE_PREFIX = "RE-PAGE"


def repage_key(incident: Incident, level: int) -> str:
    """The dedup_key of the re-page for escalation level ``level``: a new PagerDuty alert
    (the page's own key would only be deduplicated into the open one)."""
    suffix = f"-L{level}"
    key = dedup_key(incident)
    if len(key) + len(suffix) <= MAX_DEDUP_KEY:
        return key + suffix
    digest = hashlib.sha256(incident.key.encode()).hexdigest()
    return f"{incident.key[: MAX_DEDUP_KEY - 65 - len(suffix)]}-{digest}{suffix}"


def repage_event(
    incident: Incident,
    *,
    level: int,
    playbooks: Sequence[Playbook],
    reason: str,
    links: LinkPolicy = NO_LINKS,
) -> dict[str, Any]:
    """A trigger that pages again for escalation level ``level`` when the REST API cannot
    escalate the page: its own dedup_key, the severity raised one step, the summary
    saying it is a re-page and why."""
    event = trigger_event(incident, playbooks=playbooks, reason=reason, links=links)
    payload = event["payload"]
    payload["severity"] = RAISED[payload["severity"]]
    payload["summary"] = clip(f"[{REPAGE_PREFIX} level {level}] {payload['summary']}", MAX_SUMMARY)
    payload["custom_details"]["repage"] = {
        "level": level,
        "page_dedup_key": event["dedup_key"],
        "why": reason,
    }
    event["dedup_key"] = repage_key(incident, level)
    return event
