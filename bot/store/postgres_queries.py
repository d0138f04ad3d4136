"""Read-only queries for the console on PostgreSQL: incidents by filter, and what each
playbook's incidents became (``bot.store.sqlite_queries`` on SQLite).

Labels and incident data are stored as JSON text, not ``jsonb``: ``jsonb`` refuses the
``\\u0000`` an alert's labels may bring. So nothing here casts them: the text search
looks for the JSON-escaped text in the stored JSON (as it is written: compact, sorted
keys, non-ASCII as is), and the playbook figures are summed up from each incident's
data as Python reads it (``rows.stats_of``, shared with SQLite)."""

from __future__ import annotations

import json
from typing import Any

from bot.core.incidents import Incident
from bot.store import postgres_incidents as inc
from bot.store import rows as shared
from bot.store.base import IncidentQuery, PlaybookStats
from bot.store.postgres_incidents import Conn

_LABEL_TEXT = (
    "(strpos(lower(i.title), %(text)s) > 0"
    " OR strpos(lower(i.common_labels), %(json_text)s) > 0"
    " OR strpos(lower(i.group_labels), %(json_text)s) > 0"
    " OR EXISTS (SELECT 1 FROM alerts a WHERE a.incident_id = i.id"
    " AND strpos(lower(a.labels), %(json_text)s) > 0))"
)
# The service label as the store writes it: after ``{`` or ``,``, before ``,`` or ``}``.
_SERVICE = " OR ".join(
    f"strpos(i.common_labels, '{before}' || %(service)s || '{after}') > 0"
    for before in "{,"
    for after in ",}"
)


def _escaped(text: str) -> str:
    """``text`` as it appears inside a JSON string the store wrote."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


async def search_incidents(conn: Conn, query: IncidentQuery) -> list[Incident]:
    conditions: list[str] = []
    args: dict[str, Any] = {"limit": query.limit, "offset": query.offset}
    if query.status is not None:
        conditions.append("i.status = %(status)s")
        args["status"] = query.status.value
    if query.severity is not None:
        conditions.append("i.severity = %(severity)s")
        args["severity"] = query.severity.value
    if query.service:
        conditions.append(f"({_SERVICE})")
        args["service"] = f'"service":{json.dumps(query.service, ensure_ascii=False)}'
    if query.since is not None:
        conditions.append("i.opened_at >= %(since)s")
        args["since"] = query.since
    if query.until is not None:
        conditions.append("i.opened_at < %(until)s")
        args["until"] = query.until
    text = query.text.strip().lower()
    if text:
        conditions.append(_LABEL_TEXT)
        args["text"], args["json_text"] = text, _escaped(text)
    where = " AND ".join(conditions) or "TRUE"
    cur = await conn.execute(
        inc.select_incidents(
            f"{where} ORDER BY i.id DESC LIMIT %(limit)s OFFSET %(offset)s", timeline=False
        ),
        args,
    )
    return [inc.incident_of(row) for row in await cur.fetchall()]


async def playbook_stats(conn: Conn, since: float | None) -> list[PlaybookStats]:
    cur = await conn.execute(
        "SELECT id, data, opened_at, acknowledged_at, resolved_at FROM incidents"
        " WHERE opened_at >= %s",
        (float("-inf") if since is None else since,),
    )
    return shared.stats_of(await cur.fetchall())
