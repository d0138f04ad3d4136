"""Incident reads and writes on a SQLite connection, run on the store thread in a transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bot.core.alerts import AlertGroup
from bot.core.incidents import (
    Event,
    EventKind,
    Incident,
    Status,
)
from bot.records.incident import Truncated
from bot.settings import Severity
from bot.store import rows as shared
from bot.store.base import ApplyResult, Subscriptions
from bot.store.rows import JobRow, dumps

__all__ = ["JobRow", "add_event", "apply_group", "dumps", "insert_jobs", "read_incident"]


# A job's priority is its incident's severity (P0 -> 0 ... P3 -> 3), 2 without one.
_PRIORITY = "COALESCE((SELECT CAST(substr(severity, 2) AS INTEGER) FROM incidents WHERE id = ?), 2)"
_INSERT_JOB = (
    "INSERT OR IGNORE INTO jobs (kind, key, incident_id, payload, due_at, created_at,"  # noqa: S608
    f" updated_at, lane, priority) VALUES (?,?,?,?,?,?,?,?,{_PRIORITY})"
)


def insert_jobs(
    conn: sqlite3.Connection, subscribers: Subscriptions, jobs: Iterable[JobRow], now: float
) -> int:
    """Enqueue jobs (a key already there is left alone), each filed under its kind's
    lane with its incident's severity as priority; return how many were added."""
    rows = [
        (kind, key, incident_id, payload, due_at, now, now, subscribers.lane_of(kind), incident_id)
        for kind, key, incident_id, payload, due_at in jobs
    ]
    return conn.executemany(_INSERT_JOB, rows).rowcount if rows else 0


def reprioritise(conn: sqlite3.Connection, incident_id: int) -> None:
    """The incident's severity changed: its waiting jobs take the new priority."""
    conn.execute(
        f"UPDATE jobs SET priority = {_PRIORITY} WHERE incident_id = ?"  # noqa: S608
        " AND status = 'pending'",
        (incident_id, incident_id),
    )


def add_event(
    conn: sqlite3.Connection,
    subscribers: Subscriptions,
    incident_id: int,
    actor: str,
    kind: str,
    message: str,
    now: float,
    data: Mapping[str, Any] | None = None,
    notify: bool = True,
) -> Event:
    cur = conn.execute(
        "INSERT INTO events (incident_id, at, actor, kind, message, data) VALUES (?,?,?,?,?,?)",
        (incident_id, now, actor, kind, message, dumps(dict(data or {}))),
    )
    event_id = int(cur.lastrowid or 0)
    if notify:
        insert_jobs(
            conn,
            subscribers,
            shared.subscriber_jobs(subscribers, incident_id, event_id, kind, now),
            now,
        )
    return Event(event_id, incident_id, now, actor, kind, message, dict(data or {}))


def read_events(conn: sqlite3.Connection, incident_id: int, after: int = 0) -> list[Event]:
    rows = conn.execute(
        "SELECT * FROM events WHERE incident_id = ? AND id > ? ORDER BY id", (incident_id, after)
    )
    return [shared.event_from_row(row) for row in rows]


def read_incident(conn: sqlite3.Connection, row: sqlite3.Row, timeline: bool) -> Incident:
    alerts = conn.execute("SELECT * FROM alerts WHERE incident_id = ? ORDER BY rowid", (row["id"],))
    events = read_events(conn, row["id"]) if timeline else ()
    return shared.incident_from_row(row, map(shared.alert_from_row, alerts), events)


def _create(
    conn: sqlite3.Connection,
    group: AlertGroup,
    severity: Severity,
    now: float,
    previous_id: int | None,
) -> int:
    cur = conn.execute(
        "INSERT INTO incidents (key, group_hash, receiver, group_key, status, severity, title,"
        " summary, group_labels, common_labels, common_annotations, external_url, opened_at,"
        " updated_at, previous_id) VALUES ('',?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        shared.incident_values(group, severity, now, previous_id),
    )
    incident_id = int(cur.lastrowid or 0)
    conn.execute(
        "UPDATE incidents SET key = ? WHERE id = ?",
        (shared.incident_key(group, incident_id), incident_id),
    )
    return incident_id


def apply_group(
    conn: sqlite3.Connection,
    subscribers: Subscriptions,
    group: AlertGroup,
    severity: Severity,
    now: float,
) -> ApplyResult:
    """Fold one delivery of an alert group into its incident. Repeats change nothing."""
    seen = {
        (row[0], row[1], row[2])
        for row in conn.execute(
            "SELECT fingerprint, status, starts_at FROM alert_states WHERE group_hash = ?",
            (group.group_hash,),
        )
    }
    new = shared.new_alerts(group, seen)
    if not new:
        return ApplyResult(None, duplicate=True, note=shared.REPEAT_NOTE)

    latest = conn.execute(
        "SELECT id, status, severity FROM incidents WHERE group_hash = ? ORDER BY id DESC LIMIT 1",
        (group.group_hash,),
    ).fetchone()
    open_id = latest["id"] if latest is not None and latest["status"] != Status.RESOLVED else None
    events: list[int] = []

    def event(incident_id: int, kind: EventKind, message: str, **data: Any) -> None:
        events.append(
            add_event(conn, subscribers, incident_id, "alertmanager", kind, message, now, data).id
        )

    created = False
    if open_id is None:
        if not any(alert.status == "firing" for alert in new):
            note = shared.NOTHING_TO_RESOLVE
            if latest is not None:
                _upsert_alerts(conn, latest["id"], new)
            _remember(conn, group, new, latest["id"] if latest is not None else None, now)
            return ApplyResult(latest["id"] if latest is not None else None, note=note)
        previous_id = latest["id"] if latest is not None else None
        open_id = _create(conn, group, severity, now, previous_id)
        created = True
        _upsert_alerts(conn, open_id, group.alerts)
        event(
            open_id,
            EventKind.OPENED,
            shared.opened_message(group),
            severity=severity.value,
            previous_id=previous_id,
        )
        if previous_id is not None:
            event(
                previous_id,
                EventKind.REOPENED,
                f"the group fired again as incident #{open_id}",
                new_incident_id=open_id,
            )
    else:
        _upsert_alerts(conn, open_id, new)
        for alert in new:
            kind, message = shared.alert_event(alert)
            event(open_id, kind, message, fingerprint=alert.fingerprint)
        if Severity(latest["severity"]) > severity:
            conn.execute(
                "UPDATE incidents SET severity = ? WHERE id = ?", (severity.value, open_id)
            )
            reprioritise(conn, open_id)
            event(
                open_id,
                EventKind.SEVERITY,
                f"severity raised to {severity.value}",
                severity=severity.value,
            )
    # Alertmanager's max_alerts: the alerts left out are unknown here, and the group's
    # status is that of the alerts sent. Until a delivery leaves none out, the incident
    # cannot know that every alert resolved.
    if group.truncatedAlerts:
        conn.execute(
            "UPDATE incidents SET data = json_set(data, '$.truncated', json(?)) WHERE id = ?",
            (Truncated(alerts=group.truncatedAlerts, at=now).dumps(), open_id),
        )
    else:
        conn.execute(
            "UPDATE incidents SET data = json_remove(data, '$.truncated') WHERE id = ?",
            (open_id,),
        )

    still_firing = conn.execute(
        "SELECT COUNT(*) FROM alerts WHERE incident_id = ? AND status = 'firing'", (open_id,)
    ).fetchone()[0]
    conn.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", (now, open_id))
    if group.truncatedAlerts:
        event(
            open_id,
            EventKind.NOTE,
            shared.truncated_message(group.truncatedAlerts, still_firing),
            truncated=group.truncatedAlerts,
        )
    if still_firing == 0 and not group.truncatedAlerts:
        conn.execute(
            "UPDATE incidents SET status = ?, resolved_at = ? WHERE id = ?",
            (Status.RESOLVED.value, now, open_id),
        )
        event(open_id, EventKind.RESOLVED, "all alerts resolved")
    _remember(conn, group, new, open_id, now)
    return ApplyResult(open_id, created=created, events=tuple(events))


def _upsert_alerts(conn: sqlite3.Connection, incident_id: int, alerts: Sequence[Any]) -> None:
    conn.executemany(
        "INSERT INTO alerts (incident_id, fingerprint, status, labels, annotations, starts_at,"
        " ends_at, generator_url, links) VALUES (?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (incident_id, fingerprint)"
        " DO UPDATE SET status = excluded.status, labels = excluded.labels,"
        " annotations = excluded.annotations, starts_at = excluded.starts_at,"
        " ends_at = excluded.ends_at, generator_url = excluded.generator_url,"
        " links = excluded.links",
        shared.alert_values(incident_id, alerts),
    )


def _remember(
    conn: sqlite3.Connection,
    group: AlertGroup,
    alerts: Sequence[Any],
    incident_id: int | None,
    now: float,
) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO alert_states (group_hash, fingerprint, status, starts_at,"
        " incident_id, seen_at) VALUES (?,?,?,?,?,?)",
        shared.state_values(group, alerts, incident_id, now),
    )
