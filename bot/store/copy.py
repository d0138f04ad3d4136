"""``alertpilot store-copy``: an existing SQLite store into an empty PostgreSQL database,
for moving one server to several replicas.

The SQLite store is first opened as the server opens it (its migrations run, so every
column is there), then read file by file; everything is written to PostgreSQL in one
transaction, ids kept, and each id sequence set after the largest id copied. A job that
was running when the server stopped is copied as pending: it runs again, as it would
have after a restart. The copy refuses a database that already holds incidents or
payloads, so it never mixes two histories. Stop the server before copying: what it
writes meanwhile is not copied.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bot.errors import StoreError, StoreUnavailable
from bot.store.inbox_writer import unpack
from bot.store.postgres import PostgresStore, display_url
from bot.store.sqlite import SqliteStore

# Each table: its columns in PostgreSQL, and the query that reads them from SQLite.
TABLES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "incidents",
        (
            "id",
            "key",
            "group_hash",
            "receiver",
            "group_key",
            "status",
            "severity",
            "title",
            "summary",
            "group_labels",
            "common_labels",
            "common_annotations",
            "external_url",
            "opened_at",
            "updated_at",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "previous_id",
            "playbook",
            "data",
        ),
        "SELECT id, key, group_hash, receiver, group_key, status, severity, title, summary,"
        " group_labels, common_labels, common_annotations, external_url, opened_at,"
        " updated_at, acknowledged_at, acknowledged_by, resolved_at, previous_id, playbook,"
        " data FROM incidents ORDER BY id",
    ),
    (
        "alerts",
        (
            "seq",
            "incident_id",
            "fingerprint",
            "status",
            "labels",
            "annotations",
            "starts_at",
            "ends_at",
            "generator_url",
            "links",
        ),
        "SELECT rowid, incident_id, fingerprint, status, labels, annotations, starts_at,"
        " ends_at, generator_url, links FROM alerts ORDER BY rowid",
    ),
    (
        "alert_states",
        ("group_hash", "fingerprint", "status", "starts_at", "incident_id", "seen_at"),
        "SELECT group_hash, fingerprint, status, starts_at, incident_id, seen_at FROM alert_states",
    ),
    (
        "events",
        ("id", "incident_id", "at", "actor", "kind", "message", "data"),
        "SELECT id, incident_id, at, actor, kind, message, data FROM events ORDER BY id",
    ),
    (
        "jobs",
        (
            "id",
            "kind",
            "key",
            "incident_id",
            "payload",
            "status",
            "due_at",
            "attempts",
            "last_error",
            "created_at",
            "updated_at",
            "lane",
            "priority",
        ),
        "SELECT id, kind, key, incident_id, payload,"
        " CASE status WHEN 'running' THEN 'pending' ELSE status END, due_at, attempts,"
        " last_error, created_at, updated_at, lane, priority FROM jobs ORDER BY id",
    ),
    ("kv", ("key", "value", "expires_at"), "SELECT key, value, expires_at FROM kv"),
    (
        "seen_events",
        ("source", "id", "at", "result"),
        "SELECT source, id, at, result FROM seen_events",
    ),
    (
        "inbox",
        ("id", "source", "body", "received_at", "processed_at", "result"),
        "SELECT i.id, i.source, i.body, i.received_at,"
        " COALESCE(i.processed_at, d.processed_at), COALESCE(i.result, d.result)"
        " FROM received.inbox AS i LEFT JOIN inbox_done AS d ON d.id = i.id ORDER BY i.id",
    ),
]
SEQUENCES = [("incidents", "id"), ("alerts", "seq"), ("events", "id"), ("jobs", "id")]
SEQUENCES.append(("inbox", "id"))
BATCH = 1000


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"{table}: {count} row(s)" for table, count in self.rows.items()]


@contextlib.contextmanager
def _read_sqlite(path: str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("ATTACH DATABASE ? AS received", (f"file:{path}-inbox?mode=ro",))
        yield conn
    finally:
        conn.close()


def _batches(conn: sqlite3.Connection, query: str, body_at: int | None) -> Iterator[list[Any]]:
    cur = conn.execute(query)
    while rows := cur.fetchmany(BATCH):
        if body_at is None:
            yield [tuple(row) for row in rows]
        else:  # inbox bodies are stored compressed (bot.store.inbox_child.pack)
            yield [(*row[:body_at], unpack(row[body_at]), *row[body_at + 1 :]) for row in rows]


async def copy_store(sqlite_path: str, url: str, *, clock: Any) -> CopyReport:
    """Copy the SQLite store at ``sqlite_path`` into the PostgreSQL database at ``url``
    (migrated first); raise StoreError if that database is not empty."""
    source = SqliteStore(sqlite_path, clock=clock, inbox_writer=False)
    await source.open()  # brings its schema up to date
    await source.close()
    target = PostgresStore(url, clock=clock)
    await target.migrate()
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cannot connect to {display_url(url)}: {exc}") from exc
    report = CopyReport()
    try:
        async with conn.transaction():
            await _refuse_unless_empty(conn)
            with _read_sqlite(sqlite_path) as lite:
                for table, columns, query in TABLES:
                    report.rows[table] = await _copy_table(conn, lite, table, columns, query)
            for table, column in SEQUENCES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"  # noqa: S608
                    f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)".encode()
                )
    except psycopg.Error as exc:
        raise StoreError(f"copying into {display_url(url)}: {exc}") from exc
    finally:
        await conn.close()
    return report


async def _refuse_unless_empty(conn: psycopg.AsyncConnection[Any]) -> None:
    cur = await conn.execute(
        "SELECT (SELECT COUNT(*) FROM incidents) + (SELECT COUNT(*) FROM inbox)"
    )
    row = await cur.fetchone()
    if row is not None and row[0]:
        raise StoreError(
            "the PostgreSQL database already holds incidents or payloads: copy into an"
            " empty database"
        )


async def _copy_table(
    conn: psycopg.AsyncConnection[Any],
    lite: sqlite3.Connection,
    table: str,
    columns: Sequence[str],
    query: str,
) -> int:
    body_at = columns.index("body") if "body" in columns else None
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    count = 0
    async with conn.cursor() as cur, cur.copy(statement.encode()) as copy:
        for batch in _batches(lite, query, body_at):
            for row in batch:
                await copy.write_row(row)
            count += len(batch)
    return count
