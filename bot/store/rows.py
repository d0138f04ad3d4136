"""What the SQLite and PostgreSQL stores share, with no SQL in it: rows to models and back,
the fields a status change sets, the jobs an event or a change starts, the messages an
alert group's delivery writes to the timeline, and the rate-window arithmetic.

Each backend keeps only its statements, so the two cannot drift apart on what an
incident looks like or what a delivery means.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bot.core.alerts import Alert, AlertGroup
from bot.core.incidents import (
    AlertRecord,
    Event,
    EventKind,
    Incident,
    Status,
    alert_line,
    summary_of,
    title_of,
)
from bot.records.base import parsed
from bot.records.incident import PipelineState
from bot.settings import Severity
from bot.store.base import (
    ApplyResult,
    IncidentChange,
    Job,
    PlaybookStats,
    RateLimit,
    Subscriptions,
)


class Row(Protocol):
    """A row read by column name: sqlite3.Row and psycopg's dict_row alike."""

    def __getitem__(self, key: str, /) -> Any: ...


JobRow = tuple[str, str, int | None, str, float]  # kind, key, incident_id, payload, due_at

RATE_PREFIX = "rate:"  # rate windows are kept in the key-value table under this prefix

TRANSITION_EVENTS = {
    Status.ACKNOWLEDGED: EventKind.ACKNOWLEDGED,
    Status.TRIGGERED: EventKind.UNACKNOWLEDGED,
    Status.RESOLVED: EventKind.RESOLVED,
}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def priority_of(severity: str | None) -> int:
    """A job's priority is its incident's severity (P0 -> 0 ... P3 -> 3), 2 without one."""
    return int(severity[1:]) if severity else 2


# rows -> models ----------------------------------------------------------------------
def event_from_row(row: Row) -> Event:
    return Event(
        row["id"],
        row["incident_id"],
        row["at"],
        row["actor"],
        row["kind"],
        row["message"],
        json.loads(row["data"]),
    )


def alert_from_row(row: Row) -> AlertRecord:
    return AlertRecord(
        row["fingerprint"],
        row["status"],
        json.loads(row["labels"]),
        json.loads(row["annotations"]),
        row["starts_at"],
        row["ends_at"],
        row["generator_url"],
        json.loads(row["links"]),
    )


def incident_from_row(
    row: Row, alerts: Iterable[AlertRecord], timeline: Iterable[Event] = ()
) -> Incident:
    return Incident(
        id=row["id"],
        key=row["key"],
        group_hash=row["group_hash"],
        receiver=row["receiver"],
        group_key=row["group_key"],
        status=Status(row["status"]),
        severity=Severity(row["severity"]),
        title=row["title"],
        summary=row["summary"],
        group_labels=json.loads(row["group_labels"]),
        common_labels=json.loads(row["common_labels"]),
        common_annotations=json.loads(row["common_annotations"]),
        external_url=row["external_url"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        resolved_at=row["resolved_at"],
        previous_id=row["previous_id"],
        playbook=row["playbook"],
        data=json.loads(row["data"]),
        alerts=tuple(alerts),
        timeline=tuple(timeline),
    )


def job_from_row(row: Row) -> Job:
    """A job as claimed: its attempt counted (the row was read before the claim's update)."""
    return Job(
        row["id"],
        row["kind"],
        row["key"],
        row["incident_id"],
        json.loads(row["payload"]),
        row["attempts"] + 1,
        row["due_at"],
    )


# models -> rows ----------------------------------------------------------------------
def incident_values(
    group: AlertGroup, severity: Severity, now: float, previous_id: int | None
) -> tuple[Any, ...]:
    """A new incident's columns: group_hash, receiver, group_key, status, severity, title,
    summary, group_labels, common_labels, common_annotations, external_url, opened_at,
    updated_at, previous_id."""
    return (
        group.group_hash,
        group.receiver,
        group.groupKey,
        Status.TRIGGERED.value,
        severity.value,
        title_of(group),
        summary_of(group),
        dumps(group.groupLabels),
        dumps(group.commonLabels),
        dumps(group.commonAnnotations),
        group.externalURL,
        now,
        now,
        previous_id,
    )


def incident_key(group: AlertGroup, incident_id: int) -> str:
    return f"{incident_key_prefix(group)}{incident_id}"


def incident_key_prefix(group: AlertGroup) -> str:
    """An incident's key is this and its id."""
    return f"alertpilot-{group.group_hash}-"


def alert_values(incident_id: int, alerts: Sequence[Alert]) -> list[tuple[Any, ...]]:
    """incident_id, fingerprint, status, labels, annotations, starts_at, ends_at,
    generator_url, links: one tuple per alert."""
    return [
        (
            incident_id,
            a.fingerprint,
            a.status,
            dumps(a.labels),
            dumps(a.annotations),
            a.startsAt.isoformat(),
            a.endsAt.isoformat(),
            a.generatorURL,
            dumps(a.links),
        )
        for a in alerts
    ]


def state_values(
    group: AlertGroup, alerts: Sequence[Alert], incident_id: int | None, now: float
) -> list[tuple[Any, ...]]:
    """group_hash, fingerprint, status, starts_at, incident_id, seen_at per alert state."""
    return [(group.group_hash, *a.state_key, incident_id, now) for a in alerts]


def transition_fields(new: Status, actor: str, now: float) -> dict[str, object]:
    """The columns a change to ``new`` sets, by name."""
    sets: dict[str, object] = {"status": new.value, "updated_at": now}
    if new is Status.ACKNOWLEDGED:
        sets |= {"acknowledged_at": now, "acknowledged_by": actor}
    elif new is Status.TRIGGERED:
        sets |= {"acknowledged_at": None, "acknowledged_by": None}
    else:
        sets |= {"resolved_at": now}
    return sets


def subscriber_jobs(
    subscribers: Subscriptions, incident_id: int, event_id: int, kind: str, now: float
) -> list[JobRow]:
    """A job for each subscriber of events of ``kind``, keyed by the event."""
    payload = dumps({"event_id": event_id, "kind": kind})
    return [
        (s, f"{s}:event:{event_id}", incident_id, payload, now) for s in subscribers.for_event(kind)
    ]


def json_merge(raw: str, data: Mapping[str, Any]) -> str:
    """An incident's stored ``data`` with ``data``'s top-level keys replaced."""
    return dumps(json.loads(raw) | dict(data))


def change_jobs(change: IncidentChange, incident_id: int) -> list[JobRow]:
    return [
        (
            job.kind,
            job.key,
            incident_id if job.attach else None,
            dumps(dict(job.payload)),
            job.due_at,
        )
        for job in change.jobs
    ]


def processed_result(result: ApplyResult) -> str:
    """What an inbox row's outcome says once its group is applied."""
    outcome = result.note or ("duplicate" if result.duplicate else "applied")
    return outcome_text(outcome, result.incident_id)


def outcome_text(result: str, incident_id: int | None) -> str:
    return result if incident_id is None else f"{result} (incident #{incident_id})"


# an alert group's delivery, as the timeline tells it -----------------------------------
REPEAT_NOTE = "repeat delivery: no new alert state"
NOTHING_TO_RESOLVE = (
    "resolved alerts of a group with no open incident: recorded, nothing to resolve"
)


def new_alerts(group: AlertGroup, seen: set[tuple[str, str, str]]) -> list[Alert]:
    """The alerts of ``group`` whose state is not among the states already applied."""
    return [alert for alert in group.alerts if alert.state_key not in seen]


def opened_message(group: AlertGroup) -> str:
    firing = [a for a in group.alerts if a.status == "firing"]
    return f"{len(firing)} alert(s) firing: " + "; ".join(alert_line(a) for a in firing[:5])


def alert_event(alert: Alert) -> tuple[EventKind, str]:
    kind = EventKind.ALERT_FIRING if alert.status == "firing" else EventKind.ALERT_RESOLVED
    return kind, f"{alert.status}: {alert_line(alert)}"


def truncated_message(truncated: int, still_firing: int) -> str:
    """Alertmanager's max_alerts: the alerts left out are unknown here, and the group's
    status is that of the alerts sent. Until a delivery leaves none out, the incident
    cannot know that every alert resolved."""
    waits = (
        "; the sent alerts resolved, but the incident stays open until a delivery that"
        " leaves none out says all are resolved"
        if still_firing == 0
        else ""
    )
    return f"Alertmanager left out {truncated} alert(s) of this group (max_alerts){waits}"


# rate windows --------------------------------------------------------------------------
def rate_window(raw: str | None) -> list[float]:
    """A bucket's entry times as stored (a JSON list), oldest first; unreadable is empty."""
    if raw is None:
        return []
    try:
        values = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(values, list):
        return []
    return sorted(float(v) for v in values if isinstance(v, int | float))


def rate_decision(
    limits: Sequence[RateLimit], windows: Mapping[str, list[float]], now: float
) -> tuple[RateLimit | None, list[tuple[RateLimit, str]]]:
    """The first full limit (then nothing is written), or None and each bucket's new value
    (its recent entries and ``now``, as JSON) to write."""
    kept: list[tuple[RateLimit, str]] = []
    for limit in limits:
        recent = [at for at in windows.get(limit.bucket, []) if at > now - limit.window]
        if len(recent) >= limit.limit:
            return limit, []
        kept.append((limit, json.dumps([*recent, now])))
    return None, kept


@dataclass
class _Tally:
    matched: int = 0
    acknowledged: int = 0
    ack_total: float = 0.0
    resolved: int = 0
    resolve_total: float = 0.0


def stats_of(rows: Iterable[Any]) -> list[PlaybookStats]:
    """The figures of ``PlaybookStats`` from incident rows (id, data as stored, opened_at,
    acknowledged_at, resolved_at): an incident counts for each playbook it matched, and a
    remediation step for its own playbook when that playbook matched in the window."""
    tallies: dict[str, _Tally] = {}
    steps: list[dict[str, Any]] = []
    for row in rows:
        data = json.loads(row["data"])
        what = f'incident #{row["id"]} data["pipeline"]'
        state = parsed(data.get("pipeline", {}), PipelineState, what=what)
        for name in (state.playbooks or []) if state is not None else []:
            tally = tallies.setdefault(name, _Tally())
            tally.matched += 1
            if row["acknowledged_at"] is not None:
                tally.acknowledged += 1
                tally.ack_total += row["acknowledged_at"] - row["opened_at"]
            if row["resolved_at"] is not None:
                tally.resolved += 1
                tally.resolve_total += row["resolved_at"] - row["opened_at"]
        held = data.get("remediations")
        entries = (
            held.values() if isinstance(held, dict) else held if isinstance(held, list) else []
        )
        steps.extend(entry for entry in entries if isinstance(entry, dict))
    found = {
        name: PlaybookStats(
            playbook=name,
            matched=t.matched,
            acknowledged=t.acknowledged,
            mean_ack=t.ack_total / t.acknowledged if t.acknowledged else None,
            resolved=t.resolved,
            mean_resolve=t.resolve_total / t.resolved if t.resolved else None,
        )
        for name, t in tallies.items()
    }
    for step in steps:
        owner = step.get("playbook")
        if not isinstance(owner, str) or owner not in found:
            continue  # a step of a playbook that did not match here: an older record
        rollback = step.get("rollback")
        found[owner] = replace(
            found[owner],
            ran=found[owner].ran + isinstance(step.get("result"), dict),
            verified=found[owner].verified + (step.get("state") == "verified"),
            failed=found[owner].failed + (step.get("state") == "failed"),
            rolled_back=found[owner].rolled_back
            + (isinstance(rollback, dict) and rollback.get("state") == "succeeded"),
        )
    return [found[name] for name in sorted(found)]
