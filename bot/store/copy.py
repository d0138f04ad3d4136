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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bot.errors import StoreError, StoreUnavailable
from bot.store.inbox_writer import unpack
from bot.store.postgres import ADAPTERS, PostgresStore, display_url
from bot.store.sqlite import SqliteStore


@dataclass(frozen=True)
class Table:
    """A table to copy: its columns (PostgreSQL's names, in order) and where SQLite has
    them: ``source`` (the table, or a join) and ``read``, the SQLite expression of each
    column not read by its own name."""

    name: str
    columns: str
    source: str = ""
    read: Mapping[str, str] = field(default_factory=dict)
    order: str = ""
    sequence: str = ""  # the column a serial sequence numbers, set after the copy

    @property
    def names(self) -> list[str]:
        return self.columns.split()

    def query(self) -> str:
        exprs = ", ".join(self.read.get(name, name) for name in self.names)
        order = f" ORDER BY {self.order}" if self.order else ""
        return f"SELECT {exprs} FROM {self.source or self.name}{order}"  # noqa: S608 - fixed


TABLES = [
    Table(
        "incidents",
        "id key group_hash receiver group_key status severity title summary group_labels"
        " common_labels common_annotations external_url opened_at updated_at acknowledged_at"
        " acknowledged_by resolved_at previous_id playbook data",
        order="id",
        sequence="id",
    ),
    Table(
        "alerts",
        "seq incident_id fingerprint status labels annotations starts_at ends_at"
        " generator_url links",
        read={"seq": "rowid"},  # the order an incident's alerts are shown in
        order="rowid",
        sequence="seq",
    ),
    Table("alert_states", "group_hash fingerprint status starts_at incident_id seen_at"),
    Table("events", "id incident_id at actor kind message data", order="id", sequence="id"),
    Table(
        "jobs",
        "id kind key incident_id payload status due_at attempts last_error created_at"
        " updated_at lane priority",
        read={"status": "CASE status WHEN 'running' THEN 'pending' ELSE status END"},
        order="id",
        sequence="id",
    ),
    Table("kv", "key value expires_at"),
    Table("seen_events", "source id at result"),
    Table(
        "inbox",
        "id source body received_at processed_at result",
        source="received.inbox AS i LEFT JOIN inbox_done AS d ON d.id = i.id",
        read={
            "id": "i.id",
            "processed_at": "COALESCE(i.processed_at, d.processed_at)",
            "result": "COALESCE(i.result, d.result)",
        },
        order="i.id",
        sequence="id",
    ),
]

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
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, context=ADAPTERS)
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cannot connect to {display_url(url)}: {exc}") from exc
    report = CopyReport()
    try:
        async with conn.transaction():
            await _refuse_unless_empty(conn)
            with _read_sqlite(sqlite_path) as lite:
                for table in TABLES:
                    report.rows[table.name] = await _copy_table(conn, lite, table)
            for table in TABLES:
                if table.sequence:
                    await _continue_sequence(conn, table.name, table.sequence)
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
    conn: psycopg.AsyncConnection[Any], lite: sqlite3.Connection, table: Table
) -> int:
    names = table.names
    body_at = names.index("body") if "body" in names else None
    statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    count = 0
    async with conn.cursor() as cur, cur.copy(statement.encode()) as copy:
        for batch in _batches(lite, table.query(), body_at):
            for row in batch:
                await copy.write_row(row)
            count += len(batch)
    return count


async def _continue_sequence(conn: psycopg.AsyncConnection[Any], table: str, column: str) -> None:
    """New rows are numbered after the copied ones."""
    await conn.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"  # noqa: S608 - fixed
        f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)".encode()
    )
