"""Read-only queries for the console: incidents by filter, and what each playbook's
incidents became. Run on the store thread, like every other read."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

from bot.core.incidents import Incident
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


_TIMES = """
SELECT p.value AS playbook, count(*) AS matched,
       count(i.acknowledged_at) AS acknowledged,
       avg(i.acknowledged_at - i.opened_at) AS mean_ack,
       count(i.resolved_at) AS resolved,
       avg(i.resolved_at - i.opened_at) AS mean_resolve
FROM incidents i, json_each(i.data, '$.pipeline.playbooks') p
WHERE i.opened_at >= :since
GROUP BY p.value
"""

_STEPS = """
SELECT json_extract(r.value, '$.playbook') AS playbook,
       sum(json_type(r.value, '$.result') = 'object') AS ran,
       sum(json_extract(r.value, '$.state') = 'verified') AS verified,
       sum(json_extract(r.value, '$.state') = 'failed') AS failed,
       sum(json_extract(r.value, '$.rollback.state') = 'succeeded') AS rolled_back
FROM incidents i, json_each(i.data, '$.remediations') r
WHERE i.opened_at >= :since
GROUP BY 1
"""


def playbook_stats(conn: sqlite3.Connection, since: float | None) -> list[PlaybookStats]:
    args = {"since": float("-inf") if since is None else since}
    found: dict[str, PlaybookStats] = {}
    for row in conn.execute(_TIMES, args):
        found[row["playbook"]] = PlaybookStats(
            playbook=row["playbook"],
            matched=row["matched"],
            acknowledged=row["acknowledged"],
            mean_ack=row["mean_ack"],
            resolved=row["resolved"],
            mean_resolve=row["mean_resolve"],
        )
    for row in conn.execute(_STEPS, args):
        name = row["playbook"]
        if not isinstance(name, str) or name not in found:
            continue  # a step of a playbook that did not match here: an older record
        found[name] = replace(
            found[name],
            ran=row["ran"] or 0,
            verified=row["verified"] or 0,
            failed=row["failed"] or 0,
            rolled_back=row["rolled_back"] or 0,
        )
    return [found[name] for name in sorted(found)]
