"""The facts a narrative is written from, read out of an incident.

Alerts (labels, annotations, times), the pipeline's diagnostic results
(``incident.data["diagnostics"]``), remediation outcomes (``incident.data["remediations"]``)
and the timeline. Feature data is read defensively: a missing or malformed field is left
out, never guessed. ``ranked`` orders the facts from most to least telling, which is the
order they are kept in when a prompt must be cut.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bot.core.incidents import AlertRecord, EventKind, Incident
from bot.diagnostics.summary import outcome, tally, why_not_checked
from bot.records.diagnostics import diagnostics_of
from bot.records.steps import ResultView, StepView, step_views

Verdict = Literal["failed", "error", "no_data", "passed", "unknown"]

MAX_TEXT = 400  # characters kept of one annotation, diagnostic text or remediation output
FAILED_STATES = frozenset(
    {"failed", "error", "not_fixed", "verify_failed", "timed_out", "timeout", "rolled_back"}
)
QUIET_EVENTS = frozenset({EventKind.NARRATIVE, EventKind.NARRATIVE_BUDGET, EventKind.NOTIFY})


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short_time(value: str) -> str:
    """An RFC 3339 time in UTC to the second: ``2026-11-21T05:12:00.389845Z`` and
    ``2026-11-21T07:12:00+02:00`` -> ``2026-11-21T05:12:00Z``; zero time or a value
    that is not a time -> ``""`` (a time without an offset is taken as UTC)."""
    if not value or value.startswith("0001-01-01"):
        return ""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MAX_LABEL = 300  # a label value in the facts: a hostile one can be a megabyte


def clip(value: object, limit: int = MAX_TEXT) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text[: limit * 4].split())  # what is cut is never looked at
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class AlertFact:
    name: str
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    ends_at: str


@dataclass(frozen=True)
class DiagnosticFact:
    name: str
    label: str
    status: str
    passed: bool | None
    value: Any = None
    text: str = ""
    expect: str = ""
    unit: str = ""
    detail: str = ""  # the top series, e.g. "pod-a: 12.5%; pod-b: 9.1%"
    why: str = ""  # not checked: "Prometheus unreachable", "no data", "error: ..."
    cause: str = ""  # not checked: timeout, unreachable, error
    upstream: str = ""

    @property
    def checked(self) -> bool:
        """Whether the step got an answer (failed, passed or only shown); an error, a
        timeout, an unreachable source or no data is not checked."""
        return self.status not in ("error", "no_data")

    @property
    def verdict(self) -> Verdict:
        if self.passed is False:
            return "failed"
        if self.status == "error":
            return "error"
        if self.status == "no_data":
            return "no_data"
        if self.passed is True:
            return "passed"
        return "unknown"


@dataclass(frozen=True)
class RemediationFact:
    name: str
    state: str
    reason: str = ""
    output: str = ""
    runs: int | None = None
    summary: str = ""  # what ran, e.g. "POST http://… -> HTTP 200"

    @property
    def failed(self) -> bool:
        return self.state.lower() in FAILED_STATES


@dataclass(frozen=True)
class EventFact:
    at: str
    kind: str
    actor: str
    message: str
    minute: int = 0  # minutes after the incident opened


@dataclass(frozen=True)
class IncidentFacts:
    id: int
    title: str
    summary: str
    severity: str
    status: str
    opened_at: str | None
    resolved_at: str | None = None
    acknowledged_by: str | None = None
    duration_minutes: int | None = None
    playbook: str | None = None
    group_labels: Mapping[str, str] = field(default_factory=dict)
    alerts: tuple[AlertFact, ...] = ()
    diagnostics: tuple[DiagnosticFact, ...] = ()
    remediations: tuple[RemediationFact, ...] = ()
    timeline: tuple[EventFact, ...] = ()

    @property
    def firing(self) -> list[AlertFact]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def started_at(self) -> str | None:
        """When the earliest alert started firing (from the alerts, not from alertpilot)."""
        return min((a.starts_at for a in self.alerts if a.starts_at), default=None)

    @property
    def failed_diagnostics(self) -> list[DiagnosticFact]:
        return [d for d in self.diagnostics if d.verdict == "failed"]

    @property
    def unchecked_diagnostics(self) -> list[DiagnosticFact]:
        return [d for d in self.diagnostics if not d.checked]

    @property
    def passed_diagnostics(self) -> list[DiagnosticFact]:
        return [d for d in self.diagnostics if d.verdict == "passed"]

    @property
    def checks(self) -> str:
        """The diagnostics counted apart: ``2 failed (a, b), 1 passed, 6 not checked
        (Prometheus unreachable)``."""
        return tally(
            {"name": d.name, "status": d.status, "passed": d.passed, "cause": d.cause,
             "upstream": d.upstream}
            for d in self.diagnostics
        ).line()  # fmt: skip

    @property
    def failed_remediations(self) -> list[RemediationFact]:
        return [r for r in self.remediations if r.failed]


# reading -------------------------------------------------------------------------


def _alert(record: AlertRecord) -> AlertFact:
    return AlertFact(
        name=record.labels.get("alertname", "(no alertname)"),
        status=record.status,
        labels={k: clip(v, MAX_LABEL) for k, v in record.labels.items() if k != "alertname"},
        annotations={k: clip(v) for k, v in record.annotations.items()},
        starts_at=short_time(record.starts_at),
        ends_at=short_time(record.ends_at),
    )


def _str(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def _diagnostic(item: Any) -> DiagnosticFact | None:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        return None
    passed = item.get("passed")
    value = item.get("value", item.get("values"))
    if isinstance(value, str | list | dict):
        value = clip(value, 200) if not isinstance(value, str) else clip(value)
    expect = item.get("expect")
    raw_lines = item.get("lines")
    lines: list[Any] = raw_lines if isinstance(raw_lines, list) else []
    return DiagnosticFact(
        name=item["name"],
        label=_str(item, "label") or item["name"],
        status=_str(item, "status") or "unknown",
        passed=passed if isinstance(passed, bool) else None,
        value=value if isinstance(value, int | float | str) else None,
        text=clip(_str(item, "text")),
        expect=expect if isinstance(expect, str) else "",
        unit=_str(item, "unit"),
        detail=clip("; ".join(x for x in lines[:3] if isinstance(x, str)), 200),
        why=why_not_checked(item) if outcome(item) == "not_checked" else "",
        cause=_str(item, "cause"),
        upstream=_str(item, "upstream"),
    )


def _remediations(steps: Sequence[StepView]) -> list[RemediationFact]:
    out = []
    for step in steps:
        state = step.current
        if state is None:
            continue
        result = step.result or ResultView()
        out.append(
            RemediationFact(
                name=step.name or step.key,
                state=state,
                reason=clip(step.reason or ""),
                output=clip(step.output or result.output or "", 300),
                runs=step.attempt if step.runs is None else step.runs,
                summary=clip(result.summary or "", 200),
            )
        )
    return out


def from_incident(incident: Incident) -> IncidentFacts:
    stored = diagnostics_of(incident) or []
    diagnostics = [f for f in map(_diagnostic, stored) if f is not None]
    end = incident.resolved_at
    duration = None
    if end is not None:
        duration = max(0, round((end - incident.opened_at) / 60))
    return IncidentFacts(
        id=incident.id,
        title=incident.title,
        summary=clip(incident.summary),
        severity=incident.severity.value,
        status=incident.status.value,
        opened_at=iso(incident.opened_at),
        resolved_at=iso(incident.resolved_at),
        acknowledged_by=incident.acknowledged_by,
        duration_minutes=duration,
        playbook=incident.playbook,
        group_labels=dict(incident.group_labels),
        alerts=tuple(_alert(a) for a in incident.alerts),
        diagnostics=tuple(diagnostics),
        remediations=tuple(_remediations(step_views(incident))),
        timeline=tuple(
            EventFact(
                iso(e.at) or "",
                e.kind,
                e.actor,
                clip(e.message, 200),
                max(0, int((e.at - incident.opened_at) // 60)),
            )
            for e in incident.timeline
            if e.kind not in QUIET_EVENTS
        ),
    )


# ranking -------------------------------------------------------------------------

Section = Literal["alerts", "diagnostics", "remediations", "timeline"]
Ranked = tuple[Section, Any]

_DIAGNOSTIC_RANK: dict[Verdict, int] = {
    "failed": 0,
    "error": 3,
    "unknown": 5,
    "no_data": 5,
    "passed": 5,
}


def ranked(facts: IncidentFacts) -> list[Ranked]:
    """Every fact, most telling first: failed diagnostics, firing alerts, failed
    remediations, diagnostic errors, other remediations, the rest of the diagnostics,
    resolved alerts, then the timeline from the newest event back."""
    scored: list[tuple[int, int, Ranked]] = []
    for i, d in enumerate(facts.diagnostics):
        scored.append((_DIAGNOSTIC_RANK[d.verdict], i, ("diagnostics", d)))
    for i, a in enumerate(facts.alerts):
        scored.append((1 if a.status == "firing" else 6, i, ("alerts", a)))
    for i, r in enumerate(facts.remediations):
        scored.append((2 if r.failed else 4, i, ("remediations", r)))
    events = list(facts.timeline)
    for i, e in enumerate(reversed(events)):
        scored.append((7, i, ("timeline", e)))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [item for _, _, item in scored]
