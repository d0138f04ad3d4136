"""Read-only queries for the console: incidents by filter, and what each playbook's
incidents became (summed up by ``rows.stats_of``, as on PostgreSQL). Run on the store
thread, like every other read."""

from __future__ import annotations

import sqlite3
from typing import Any

from bot.core.incidents import Incident
from bot.store import rows as shared
from bot.store import sqlite_incidents as inc
from bot.store.base import IncidentQuery, PlaybookStats

# A label name or value of the group, or of one of its alerts, holds the text (lower case:
# SQLite's lower() folds ASCII only, which is what label names and most values are).
_LABEL_TEXT = """(
    instr(lower(title), :text) > 0
    OR EXISTS (SELECT 1 FROM json_each(incidents.common_labels) j
               WHERE instr(lower(j.key), :text) > 0 OR instr(lower(j.value), :text) > 0)
    OR EXISTS (SELECT 1 FROM json_each(incidents.group_labels) j
               WHERE instr(lower(j.key), :text) > 0 OR instr(lower(j.value), :text) > 0)
    OR EXISTS (SELECT 1 FROM alerts a, json_each(a.labels) j WHERE a.incident_id = incidents.id
               AND (instr(lower(j.key), :text) > 0 OR instr(lower(j.value), :text) > 0))
)"""


def search_incidents(conn: sqlite3.Connection, query: IncidentQuery) -> list[Incident]:
    conditions: list[str] = []
    args: dict[str, Any] = {"limit": query.limit, "offset": query.offset}
    if query.status is not None:
        conditions.append("status = :status")
        args["status"] = query.status.value
    if query.severity is not None:
        conditions.append("severity = :severity")
        args["severity"] = query.severity.value
    if query.service:
        conditions.append("json_extract(common_labels, '$.service') = :service")
        args["service"] = query.service
    if query.since is not None:
        conditions.append("opened_at >= :since")
        args["since"] = query.since
    if query.until is not None:
        conditions.append("opened_at < :until")
        args["until"] = query.until
    if query.text.strip():
        conditions.append(_LABEL_TEXT)
        args["text"] = query.text.strip().lower()
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = conn.execute(
        f"SELECT * FROM incidents {where} ORDER BY id DESC LIMIT :limit OFFSET :offset",  # noqa: S608
        args,
    ).fetchall()
    return [inc.read_incident(conn, row, False) for row in rows]


def playbook_stats(conn: sqlite3.Connection, since: float | None) -> list[PlaybookStats]:
    rows = conn.execute(
        "SELECT id, data, opened_at, acknowledged_at, resolved_at FROM incidents"
        " WHERE opened_at >= ?",
        (float("-inf") if since is None else since,),
    )
    return shared.stats_of(rows)
