"""Incident reads and writes on a PostgreSQL connection, each inside the caller's
transaction (``PostgresStore._tx``); the SQLite store's ``sqlite_incidents`` and
``sqlite_changes``, for several replicas writing at once.

Where SQLite has one writer at a time, here the order comes from row locks: anything
that writes an incident's timeline or jobs first locks the incident's row (``FOR
UPDATE``) and holds it to its commit. So the jobs of one incident get their ids in the
order they commit, and the claim's rule "a job waits for the earlier jobs of its kind for
its incident" cannot be overtaken by a job whose smaller id commits later.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from bot.core.alerts import Alert, AlertGroup
from bot.core.incidents import Event, EventKind, Incident, Status
from bot.errors import NotFound
from bot.settings import Severity
from bot.store import rows as shared
from bot.store.base import ApplyResult, Decided, IncidentChange, RateLimit, Subscriptions
from bot.store.rows import JobRow, dumps

Conn = AsyncConnection[DictRow]
T = TypeVar("T")

# Rows in the order given (ids in that order), each job's priority from its incident's
# severity (P0 -> 0 ... P3 -> 3), 2 without one; arrays in binary (``%b``), so that JSON
# payloads are not escaped character by character.
_INSERT_JOBS = (
    "INSERT INTO jobs (kind, key, incident_id, payload, due_at, created_at, updated_at,"
    " lane, priority) SELECT t.k, t.key, t.i, t.p, t.d, %s, %s, t.l,"
    " COALESCE((SELECT CAST(substr(severity, 2) AS INTEGER) FROM incidents WHERE id = t.i), 2)"
    " FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::float8[], %b::text[])"
    " WITH ORDINALITY AS t(k, key, i, p, d, l, n) ORDER BY t.n ON CONFLICT (key) DO NOTHING"
)


# An incident with its alerts (and its timeline) in one query, each as a JSON array of
# its rows: one round trip where three were (an incident is read by nearly every job).
_ALERTS = (
    "(SELECT COALESCE(json_agg(a ORDER BY a.seq), '[]') FROM alerts a"
    " WHERE a.incident_id = i.id)::text AS alerts_json"
)
_EVENTS = (
    "(SELECT COALESCE(json_agg(e ORDER BY e.id), '[]') FROM events e"
    " WHERE e.incident_id = i.id)::text AS events_json"
)


def select_incidents(where: str, *, timeline: bool, lock: bool = False) -> bytes:
    """``SELECT`` incidents ``where`` (a condition on ``i``), for ``incident_of``."""
    events = f", {_EVENTS}" if timeline else ""
    locked = " FOR UPDATE OF i" if lock else ""
    query = f"SELECT i.*, {_ALERTS}{events} FROM incidents i WHERE {where}{locked}"  # noqa: S608
    return query.encode()


def incident_of(row: DictRow) -> Incident:
    """A row of ``select_incidents`` as an incident (with its timeline if it was read)."""
    alerts = [shared.alert_from_row(a) for a in json.loads(row["alerts_json"])]
    raw = row.get("events_json")
    events = [] if raw is None else [shared.event_from_row(e) for e in json.loads(raw)]
    return shared.incident_from_row(row, alerts, events)


async def lock_incident(conn: Conn, incident_id: int) -> None:
    """Lock the incident's row until the commit; NotFound if there is none."""
    cur = await conn.execute("SELECT id FROM incidents WHERE id = %s FOR UPDATE", (incident_id,))
    if await cur.fetchone() is None:
        raise NotFound(f"no incident #{incident_id}")


async def locked_incident(conn: Conn, incident_id: int, *, timeline: bool = False) -> DictRow:
    """The incident's row (for ``incident_of``), locked until the commit; NotFound if
    there is none."""
    cur = await conn.execute(
        select_incidents("i.id = %s", timeline=timeline, lock=True), (incident_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no incident #{incident_id}")
    return row


async def insert_jobs(
    conn: Conn,
    subscribers: Subscriptions,
    jobs: Iterable[JobRow],
    now: float,
    *,
    locked: int | None = None,
) -> int:
    """Enqueue jobs (a key already there is left alone) under their kind's lane with their
    incident's severity as priority, after locking their incidents (but ``locked``, which
    the caller holds); return how many were added."""
    rows = list(jobs)
    if not rows:
        return 0
    incidents = sorted({row[2] for row in rows if row[2] is not None} - {locked})
    if incidents:
        await conn.execute(
            "SELECT id FROM incidents WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (incidents,)
        )
    columns = [list(column) for column in zip(*rows, strict=True)]
    lanes = [subscribers.lane_of(kind) for kind in columns[0]]
    cur = await conn.execute(_INSERT_JOBS.encode(), (now, now, *columns, lanes))
    return max(cur.rowcount, 0)


async def reprioritise(conn: Conn, incident_id: int) -> None:
    """The incident's severity changed: its waiting jobs take the new priority."""
    await conn.execute(
        "UPDATE jobs SET priority = COALESCE((SELECT CAST(substr(severity, 2) AS INTEGER)"
        " FROM incidents WHERE id = %s), 2) WHERE incident_id = %s AND status = 'pending'",
        (incident_id, incident_id),
    )


# An event and its subscribers' jobs in one statement (``shared.subscriber_jobs``, with
# the event's id known only here): one round trip, where an event is written per alert.
_INSERT_EVENT = (
    "WITH e AS (INSERT INTO events (incident_id, at, actor, kind, message, data)"
    " VALUES (%(incident)s, %(now)s, %(actor)s, %(kind)s, %(message)s, %(data)s) RETURNING id),"
    " j AS (INSERT INTO jobs (kind, key, incident_id, payload, due_at, created_at, updated_at,"
    " lane, priority) SELECT s.kind, s.kind || ':event:' || e.id, %(incident)s,"
    " json_build_object('event_id', e.id, 'kind', %(kind)s)::text, %(now)s, %(now)s, %(now)s,"
    " s.lane, COALESCE((SELECT CAST(substr(severity, 2) AS INTEGER) FROM incidents"
    " WHERE id = %(incident)s), 2)"
    " FROM e, unnest(%(kinds)s::text[], %(lanes)s::text[]) WITH ORDINALITY AS s(kind, lane, n)"
    " ORDER BY s.n ON CONFLICT (key) DO NOTHING)"
    " SELECT id FROM e"
)


async def add_event(
    conn: Conn,
    subscribers: Subscriptions,
    incident_id: int,
    actor: str,
    kind: str,
    message: str,
    now: float,
    data: Mapping[str, Any] | None = None,
    notify: bool = True,
    *,
    locked: bool = False,
) -> Event:
    """Add to the timeline, with a job for each subscriber given ``notify``; the incident
    is locked first, unless the caller holds it (``locked``)."""
    if not locked:
        await lock_incident(conn, incident_id)
    kinds = subscribers.for_event(kind) if notify else []
    cur = await conn.execute(
        _INSERT_EVENT.encode(),
        {
            "incident": incident_id,
            "now": now,
            "actor": actor,
            "kind": kind,
            "message": message,
            "data": dumps(dict(data or {})),
            "kinds": kinds,
            "lanes": [subscribers.lane_of(k) for k in kinds],
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return Event(int(row["id"]), incident_id, now, actor, kind, message, dict(data or {}))


async def read_events(conn: Conn, incident_id: int, after: int = 0) -> list[Event]:
    cur = await conn.execute(
        "SELECT * FROM events WHERE incident_id = %s AND id > %s ORDER BY id", (incident_id, after)
    )
    return [shared.event_from_row(row) for row in await cur.fetchall()]


async def _create(
    conn: Conn, group: AlertGroup, severity: Severity, now: float, previous_id: int | None
) -> int:
    prefix = shared.incident_key_prefix(group)
    cur = await conn.execute(
        "WITH n AS (SELECT nextval(pg_get_serial_sequence('incidents', 'id')) AS id)"
        " INSERT INTO incidents (id, key, group_hash, receiver, group_key, status, severity,"
        " title, summary, group_labels, common_labels, common_annotations, external_url,"
        " opened_at, updated_at, previous_id) SELECT n.id, %s || n.id,"
        " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s FROM n RETURNING id",
        (prefix, *shared.incident_values(group, severity, now, previous_id)),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def _upsert_alerts(conn: Conn, incident_id: int, alerts: Sequence[Alert]) -> None:
    """One statement for all ``alerts`` (columns as arrays, in binary)."""
    rows = shared.alert_values(incident_id, alerts)
    columns = [list(column) for column in zip(*rows, strict=True)][1:]
    await conn.execute(
        "INSERT INTO alerts (incident_id, fingerprint, status, labels, annotations,"
        " starts_at, ends_at, generator_url, links) SELECT %b, * FROM unnest(%b::text[],"
        " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
        " ON CONFLICT (incident_id, fingerprint)"
        " DO UPDATE SET status = excluded.status, labels = excluded.labels,"
        " annotations = excluded.annotations, starts_at = excluded.starts_at,"
        " ends_at = excluded.ends_at, generator_url = excluded.generator_url,"
        " links = excluded.links",
        (incident_id, *columns),
    )


async def _remember(
    conn: Conn, group: AlertGroup, alerts: Sequence[Alert], incident_id: int | None, now: float
) -> None:
    rows = shared.state_values(group, alerts, incident_id, now)
    _, fingerprints, statuses, starts, _, _ = (list(column) for column in zip(*rows, strict=True))
    await conn.execute(
        "INSERT INTO alert_states (group_hash, fingerprint, status, starts_at, incident_id,"
        " seen_at) SELECT %s, *, %s::bigint, %s FROM unnest(%b::text[], %b::text[], %b::text[])"
        " ON CONFLICT DO NOTHING",
        (group.group_hash, incident_id, now, fingerprints, statuses, starts),
    )


async def apply_group(
    conn: Conn, subscribers: Subscriptions, group: AlertGroup, severity: Severity, now: float
) -> ApplyResult:
    """Fold one delivery of an alert group into its incident. Repeats change nothing.
    The caller holds the inbox's lock (``PostgresStore.apply_groups``): deliveries are
    applied one transaction at a time across replicas, so the states read here are every
    state applied before."""
    cur = await conn.execute(
        "SELECT fingerprint, status, starts_at FROM alert_states WHERE group_hash = %s",
        (group.group_hash,),
    )
    seen = {(r["fingerprint"], r["status"], r["starts_at"]) for r in await cur.fetchall()}
    new = shared.new_alerts(group, seen)
    if not new:
        return ApplyResult(None, duplicate=True, note=shared.REPEAT_NOTE)

    cur = await conn.execute(
        "SELECT id, status, severity FROM incidents WHERE group_hash = %s"
        " ORDER BY id DESC LIMIT 1 FOR UPDATE",
        (group.group_hash,),
    )
    latest = await cur.fetchone()
    open_id = latest["id"] if latest is not None and latest["status"] != Status.RESOLVED else None
    events: list[int] = []

    async def event(incident_id: int, kind: EventKind, message: str, **data: Any) -> None:
        added = await add_event(
            conn, subscribers, incident_id, "alertmanager", kind, message, now, data, locked=True
        )
        events.append(added.id)

    created = False
    if open_id is None:
        if not any(alert.status == "firing" for alert in new):
            latest_id = latest["id"] if latest is not None else None
            if latest_id is not None:
                await _upsert_alerts(conn, latest_id, new)
            await _remember(conn, group, new, latest_id, now)
            return ApplyResult(latest_id, note=shared.NOTHING_TO_RESOLVE)
        previous_id = latest["id"] if latest is not None else None
        open_id = await _create(conn, group, severity, now, previous_id)
        created = True
        await _upsert_alerts(conn, open_id, group.alerts)
        await event(
            open_id,
            EventKind.OPENED,
            shared.opened_message(group),
            severity=severity.value,
            previous_id=previous_id,
        )
        if previous_id is not None:
            await event(
                previous_id,
                EventKind.REOPENED,
                f"the group fired again as incident #{open_id}",
                new_incident_id=open_id,
            )
    else:
        assert latest is not None
        await _upsert_alerts(conn, open_id, new)
        for alert in new:
            kind, message = shared.alert_event(alert)
            await event(open_id, kind, message, fingerprint=alert.fingerprint)
        if Severity(latest["severity"]) > severity:
            await conn.execute(
                "UPDATE incidents SET severity = %s WHERE id = %s", (severity.value, open_id)
            )
            await reprioritise(conn, open_id)
            await event(
                open_id,
                EventKind.SEVERITY,
                f"severity raised to {severity.value}",
                severity=severity.value,
            )
    still_firing = await _touch(conn, open_id, group.truncatedAlerts, now)
    if group.truncatedAlerts:
        await event(
            open_id,
            EventKind.NOTE,
            shared.truncated_message(group.truncatedAlerts, still_firing),
            truncated=group.truncatedAlerts,
        )
    if still_firing == 0 and not group.truncatedAlerts:
        await conn.execute(
            "UPDATE incidents SET status = %s, resolved_at = %s WHERE id = %s",
            (Status.RESOLVED.value, now, open_id),
        )
        await event(open_id, EventKind.RESOLVED, "all alerts resolved")
    await _remember(conn, group, new, open_id, now)
    return ApplyResult(open_id, created=created, events=tuple(events))


async def _touch(conn: Conn, incident_id: int, truncated: int, now: float) -> int:
    """Set ``updated_at`` and keep (or drop) ``data.truncated`` (how many alerts
    Alertmanager left out, and when); return how many of the incident's alerts fire.
    The data is merged here, not as ``jsonb`` on the server: ``jsonb`` refuses a
    ``\\u0000`` that an alert's labels may hold."""
    cur = await conn.execute(
        "UPDATE incidents SET updated_at = %(now)s WHERE id = %(incident)s RETURNING data,"
        " (SELECT COUNT(*) FROM alerts WHERE incident_id = %(incident)s"
        " AND status = 'firing') AS firing",
        {"now": now, "incident": incident_id},
    )
    row = await cur.fetchone()
    assert row is not None
    data = json.loads(row["data"])
    if truncated or "truncated" in data:
        if truncated:
            data["truncated"] = {"alerts": truncated, "at": now}
        else:
            del data["truncated"]
        await conn.execute(
            "UPDATE incidents SET data = %s WHERE id = %s", (dumps(data), incident_id)
        )
    return int(row["firing"])


async def decide_incident(
    conn: Conn,
    subscribers: Subscriptions,
    incident_id: int,
    decide: Callable[[Incident], Decided[T]],
    now: float,
) -> tuple[list[Event], T]:
    """Write what ``decide`` decided on the incident as it is now (its row locked: no other
    replica changes it meanwhile); its events and what it decided for the caller."""
    row = await locked_incident(conn, incident_id)
    decided = decide(incident_of(row))
    result = decided.change
    if result.data:
        merged = json.loads(row["data"]) | dict(result.data)
        await conn.execute(
            "UPDATE incidents SET data = %s, updated_at = %s WHERE id = %s",
            (dumps(merged), now, incident_id),
        )
    if result.severity is not None or result.playbook is not None:
        await conn.execute(
            "UPDATE incidents SET severity = COALESCE(%s, severity),"
            " playbook = COALESCE(%s, playbook), updated_at = %s WHERE id = %s",
            (
                result.severity.value if result.severity is not None else None,
                result.playbook,
                now,
                incident_id,
            ),
        )
        if result.severity is not None:
            await reprioritise(conn, incident_id)
    events = [
        await add_event(
            conn,
            subscribers,
            incident_id,
            e.actor,
            e.kind,
            e.message,
            now,
            e.data,
            e.notify,
            locked=True,
        )
        for e in result.events
    ]
    for prefix in result.cancel:  # before the new jobs: a replanned timer is not hit
        await cancel_jobs(conn, prefix, now)
    jobs = shared.change_jobs(result, incident_id)
    await insert_jobs(conn, subscribers, jobs, now, locked=incident_id)
    return events, decided.result


async def change_incident(
    conn: Conn,
    subscribers: Subscriptions,
    incident_id: int,
    change: Callable[[Incident], IncidentChange],
    now: float,
) -> list[Event]:
    events, _ = await decide_incident(
        conn, subscribers, incident_id, lambda incident: Decided(change(incident), None), now
    )
    return events


async def cancel_jobs(conn: Conn, prefix: str, now: float) -> int:
    """Mark the pending jobs whose key starts with ``prefix`` cancelled (a range on the
    key's unique index: U+10FFFF sorts after every character a key holds)."""
    if not prefix:
        raise ValueError("cancelling needs a key prefix")
    cur = await conn.execute(
        "UPDATE jobs SET status = 'cancelled', updated_at = %s WHERE key >= %s AND key < %s"
        " AND status = 'pending'",
        (now, prefix, prefix + "\U0010ffff"),
    )
    return cur.rowcount


async def _window(conn: Conn, bucket: str, now: float) -> list[float]:
    cur = await conn.execute(
        "SELECT value FROM kv WHERE key = %s AND (expires_at IS NULL OR expires_at > %s)",
        (shared.RATE_PREFIX + bucket, now),
    )
    row = await cur.fetchone()
    return shared.rate_window(None if row is None else row["value"])


async def take_rate_slot(conn: Conn, limits: Sequence[RateLimit], now: float) -> RateLimit | None:
    """Every replica counts in the same windows: each bucket is locked (a transaction-
    scoped advisory lock on its name, in a fixed order) from its read to the commit."""
    for bucket in sorted({limit.bucket for limit in limits}):
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (shared.RATE_PREFIX + bucket,),
        )
    windows = {limit.bucket: await _window(conn, limit.bucket, now) for limit in limits}
    full, writes = shared.rate_decision(limits, windows, now)
    for limit, value in writes:
        await conn.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (%s, %s, %s) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            (shared.RATE_PREFIX + limit.bucket, value, now + limit.window),
        )
    return full


async def rate_entries(conn: Conn, bucket: str, since: float, now: float) -> list[float]:
    return [at for at in await _window(conn, bucket, now) if at > since]
