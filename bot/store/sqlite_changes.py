"""Feature changes on a SQLite connection: an incident's data with its events and jobs in
one transaction, and rate windows kept in the key-value table.

Run on the store thread inside a transaction (``SqliteStore._run``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from bot.core.incidents import Event, Incident
from bot.errors import NotFound
from bot.store import rows as shared
from bot.store import sqlite_incidents as inc
from bot.store.base import Decided, IncidentChange, RateLimit, Subscriptions

T = TypeVar("T")


def write_lock(conn: sqlite3.Connection) -> None:
    """Begin the transaction holding the store file's write lock, so what it reads is still
    current when it writes: another process (``alertpilot approve``) may write the same file.

    Not ``BEGIN IMMEDIATE``: that takes the write lock of every attached database, the
    inbox's file too, and the inbox writer's commit of a webhook found it locked and slept
    in SQLite's busy handler (1, 2, 5 ms ...) until the transaction ended. At 200 new alerts
    a second, one ack in ten waited 3 to 8 ms for it. A write that changes nothing takes
    the lock of the file it names and no other."""
    if not conn.in_transaction:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM main.kv WHERE 0")


def change_incident(
    conn: sqlite3.Connection,
    subscribers: Subscriptions,
    incident_id: int,
    change: Callable[[Incident], IncidentChange],
    now: float,
) -> list[Event]:
    events, _ = decide_incident(
        conn, subscribers, incident_id, lambda incident: Decided(change(incident), None), now
    )
    return events


def decide_incident(
    conn: sqlite3.Connection,
    subscribers: Subscriptions,
    incident_id: int,
    decide: Callable[[Incident], Decided[T]],
    now: float,
) -> tuple[list[Event], T]:
    """Write what ``decide`` decided on the incident as it is now; its events and what it
    decided for the caller."""
    write_lock(conn)
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        raise NotFound(f"no incident #{incident_id}")
    decided = decide(inc.read_incident(conn, row, False))
    result = decided.change
    if result.data:
        merged = json.loads(row["data"]) | dict(result.data)
        conn.execute(
            "UPDATE incidents SET data = ?, updated_at = ? WHERE id = ?",
            (inc.dumps(merged), now, incident_id),
        )
    if result.severity is not None or result.playbook is not None:
        conn.execute(
            "UPDATE incidents SET severity = COALESCE(?, severity),"
            " playbook = COALESCE(?, playbook), updated_at = ? WHERE id = ?",
            (
                result.severity.value if result.severity is not None else None,
                result.playbook,
                now,
                incident_id,
            ),
        )
        if result.severity is not None:
            inc.reprioritise(conn, incident_id)
    events = [
        inc.add_event(
            conn, subscribers, incident_id, e.actor, e.kind, e.message, now, e.data, e.notify
        )
        for e in result.events
    ]
    for prefix in result.cancel:  # before the new jobs: a replanned timer is not hit
        cancel_jobs(conn, prefix, now)
    inc.insert_jobs(conn, subscribers, shared.change_jobs(result, incident_id), now)
    return events, decided.result


def cancel_jobs(conn: sqlite3.Connection, prefix: str, now: float) -> int:
    """Mark the pending jobs whose key starts with ``prefix`` cancelled (a range on the
    key's unique index: U+10FFFF sorts after every character a key holds)."""
    if not prefix:
        raise ValueError("cancelling needs a key prefix")
    return conn.execute(
        "UPDATE jobs SET status = 'cancelled', updated_at = ? WHERE key >= ? AND key < ?"
        " AND status = 'pending'",
        (now, prefix, prefix + "\U0010ffff"),
    ).rowcount


def _entries(conn: sqlite3.Connection, bucket: str, now: float) -> list[float]:
    row = conn.execute(
        "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
        (shared.RATE_PREFIX + bucket, now),
    ).fetchone()
    return shared.rate_window(None if row is None else row[0])


def take_rate_slot(
    conn: sqlite3.Connection, limits: Sequence[RateLimit], now: float
) -> RateLimit | None:
    write_lock(conn)
    windows = {limit.bucket: _entries(conn, limit.bucket, now) for limit in limits}
    full, writes = shared.rate_decision(limits, windows, now)
    for limit, value in writes:
        conn.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?,?,?) ON CONFLICT (key) "
            "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            (shared.RATE_PREFIX + limit.bucket, value, now + limit.window),
        )
    return full


def rate_entries(conn: sqlite3.Connection, bucket: str, since: float, now: float) -> list[float]:
    return [at for at in _entries(conn, bucket, now) if at > since]
