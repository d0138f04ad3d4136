"""Incidents: one per Alertmanager alert group, with a status machine and a timeline.

An incident is identified by its group (receiver + groupKey). It tracks its alerts by
fingerprint, resolves when all of them have resolved, and a group that fires again
after resolving opens a new incident that links to the previous one.

    triggered ──ack──▶ acknowledged ──resolve──▶ resolved
        ▲  └──────────────resolve──────────────────▲
        └────unack────────┘

This module is pure: the store applies its decisions inside one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.core.alerts import Alert, AlertGroup
from bot.errors import AlertpilotError
from bot.settings import IncidentSettings, Severity


class Status(StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


ALLOWED: dict[Status, frozenset[Status]] = {
    Status.TRIGGERED: frozenset({Status.ACKNOWLEDGED, Status.RESOLVED}),
    Status.ACKNOWLEDGED: frozenset({Status.TRIGGERED, Status.RESOLVED}),
    Status.RESOLVED: frozenset(),
}


class TransitionError(AlertpilotError, ValueError):
    """A status change the state machine does not allow (e.g. acknowledging a resolved incident)."""


def check_transition(current: Status, new: Status) -> None:
    if new not in ALLOWED[current]:
        raise TransitionError(f"cannot go from {current} to {new}")


class EventKind(StrEnum):
    """What a timeline event records. Notifiers subscribe to the timeline."""

    OPENED = "incident.opened"
    REOPENED = "incident.reopened"
    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    RESOLVED = "incident.resolved"
    ACKNOWLEDGED = "incident.acknowledged"
    UNACKNOWLEDGED = "incident.unacknowledged"
    ESCALATED = "incident.escalated"
    SEVERITY = "incident.severity"
    PLAYBOOK = "playbook.matched"
    DIAGNOSTIC = "diagnostic.result"
    DIAGNOSTICS_DONE = "diagnostics.done"
    REMEDIATION = "remediation"
    APPROVAL = "approval"
    NARRATIVE = "narrative"
    NARRATIVE_BUDGET = "narrative.budget"
    NOTIFY = "notify"
    PAGE = "page"
    NOTE = "note"
    JOB_FAILED = "job.failed"


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: int
    at: float
    actor: str
    kind: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertRecord:
    fingerprint: str
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    ends_at: str
    generator_url: str
    links: Mapping[str, str] = field(default_factory=dict)  # Grafana's, by title


@dataclass(frozen=True)
class IncidentBrief:
    """What a list of many incidents shows of each (a storm's roll-up): a few columns,
    not the alerts and data of hundreds of incidents at once."""

    id: int
    status: Status
    severity: Severity
    title: str


@dataclass(frozen=True)
class Incident:
    id: int
    key: str
    group_hash: str
    receiver: str
    group_key: str
    status: Status
    severity: Severity
    title: str
    summary: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    opened_at: float
    updated_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    previous_id: int | None = None
    playbook: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    alerts: tuple[AlertRecord, ...] = ()
    timeline: tuple[Event, ...] = ()

    @property
    def firing(self) -> list[AlertRecord]:
        return [alert for alert in self.alerts if alert.status == "firing"]

    def to_json(self, *, with_timeline: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "key": self.key,
            "status": self.status.value,
            "severity": self.severity.value,
            "title": self.title,
            "summary": self.summary,
            "receiver": self.receiver,
            "groupKey": self.group_key,
            "groupLabels": dict(self.group_labels),
            "commonLabels": dict(self.common_labels),
            "commonAnnotations": dict(self.common_annotations),
            "externalURL": self.external_url,
            "openedAt": self.opened_at,
            "updatedAt": self.updated_at,
            "acknowledgedAt": self.acknowledged_at,
            "acknowledgedBy": self.acknowledged_by,
            "resolvedAt": self.resolved_at,
            "previousId": self.previous_id,
            "playbook": self.playbook,
            "alerts": [
                {
                    "fingerprint": a.fingerprint,
                    "status": a.status,
                    "labels": dict(a.labels),
                    "annotations": dict(a.annotations),
                    "startsAt": a.starts_at,
                    "endsAt": a.ends_at,
                    "generatorURL": a.generator_url,
                    **({"links": dict(a.links)} if a.links else {}),
                }
                for a in self.alerts
            ],
        }
        if with_timeline:
            out["timeline"] = [
                {
                    "id": e.id,
                    "at": e.at,
                    "actor": e.actor,
                    "kind": e.kind,
                    "message": e.message,
                    "data": dict(e.data),
                }
                for e in self.timeline
            ]
        return out


def severity_of(group: AlertGroup, settings: IncidentSettings) -> Severity:
    """Map the group's severity label to P0-P3 (the highest among its alerts)."""
    found: list[Severity] = []
    for labels in [group.commonLabels, *(alert.labels for alert in group.alerts)]:
        value = labels.get(settings.severity_label)
        if value is not None and value.lower() in settings.severity_map:
            found.append(settings.severity_map[value.lower()])
    return min(found) if found else settings.default_severity


def title_of(group: AlertGroup) -> str:
    alert = group.alerts[0]
    name = group.commonLabels.get("alertname") or alert.name
    scope = ", ".join(
        f"{key}={value}" for key, value in sorted(group.groupLabels.items()) if key != "alertname"
    )
    return f"{name} ({scope})" if scope else name


def summary_of(group: AlertGroup) -> str:
    annotations = group.commonAnnotations or group.alerts[0].annotations
    return annotations.get("summary") or annotations.get("description") or title_of(group)


def alert_line(alert: Alert) -> str:
    detail = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
    return f"{alert.name} {{{detail}}}" if detail else alert.name
