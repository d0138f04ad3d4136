"""The inbox writer on PostgreSQL: webhook payloads are committed by a child process of
the server with a connection of its own, as on SQLite.

What a user relies on: an acknowledged payload is committed; the database's address and
password are not on any command line; a connection the server dropped is opened again by
the same writer. A writer that hangs or dies is tested on both stores in
``test_inbox_writer.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient

from bot import keys
from bot.store.inbox_child_pg import Writer
from conftest import payload
from test_crash import group
from test_inbox_writer import start as start_with
from test_inbox_writer import writer_pid


async def start(aiohttp_client: Any, tmp_path: Path, pg_url: str) -> TestClient:
    return await start_with(aiohttp_client, tmp_path, store={"url": pg_url})


def inbox_row(pg_url: str, inbox_id: int) -> tuple[str, str, Any]:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT source, body, result FROM inbox WHERE id = %s", (inbox_id,)
        ).fetchone()
    assert row is not None, f"inbox row {inbox_id} is not committed"
    return row


def command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def writer_backends(pg_url: str) -> list[int]:
    """Server processes of the inbox writer's connections to this database."""
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'alertpilot-inbox' AND datname = current_database()"
        ).fetchall()
    return [row[0] for row in rows]


async def test_an_acked_payload_is_committed_by_the_writer_child(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    client = await start(aiohttp_client, tmp_path, pg_url)
    pid = writer_pid(client)
    # Its command line names no database: the address (and any password) came on stdin.
    cmdline = command_line(pid)
    assert b"postgres" not in cmdline.replace(b"inbox_child_pg", b"")
    assert pg_url.rsplit("/", 1)[1].encode() not in cmdline
    assert len(writer_backends(pg_url)) == 1

    body = payload("captured-firing")
    resp = await client.post("/alertmanager", json=body)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    source, stored, result = inbox_row(pg_url, answer["inbox_id"])
    assert (source, result) == ("alertmanager", None)
    assert json.loads(stored) == body

    await client.app[keys.INBOX].drain()
    again = await (await client.post("/alertmanager", json=body)).json()
    assert again["duplicate"] is True  # stored already processed, by the same writer
    assert inbox_row(pg_url, again["inbox_id"])[2] == "duplicate"
    assert writer_pid(client) == pid


async def test_each_webhook_of_a_batch_is_answered_with_its_own_row(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    """Webhooks that arrive together are committed in one statement, while another
    writer (a second replica) draws ids from the same sequence: each ack still names the
    row holding that webhook's body, and answers to no other."""
    client = await start(aiohttp_client, tmp_path, pg_url)
    stop = threading.Event()

    def other_replica() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT nextval(pg_get_serial_sequence('inbox', 'id'))")

    other = threading.Thread(target=other_replica)
    other.start()
    try:
        bodies = [group(i) for i in range(120)]
        answers = await asyncio.gather(
            *(client.post("/alertmanager", json=body) for body in bodies)
        )
        ids = [(await resp.json())["inbox_id"] for resp in answers]
    finally:
        stop.set()
        other.join()
    assert len(set(ids)) == len(ids)
    with psycopg.connect(pg_url) as conn:
        stored = dict(conn.execute("SELECT id, body FROM inbox").fetchall())
    assert [json.loads(stored[inbox_id]) for inbox_id in ids] == bodies
    assert sorted(stored) != list(range(min(stored), max(stored) + 1))  # ids were shared


async def test_a_connection_the_server_dropped_is_opened_again(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    client = await start(aiohttp_client, tmp_path, pg_url)
    pid = writer_pid(client)
    (backend,) = writer_backends(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
    # The first webhook after it may find the connection gone (503: retried); none after
    # it does, and the same writer serves them on a new connection.
    statuses = []
    for i in range(3):
        resp = await client.post("/alertmanager", json=group(i))
        statuses.append(resp.status)
    assert statuses[1:] == [200, 200] and statuses[0] in (200, 503)
    assert writer_pid(client) == pid
    assert writer_backends(pg_url) not in ([], [backend])
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()


async def test_payload_bodies_are_compressed_with_lz4(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    """Migration 2, where the server has lz4 (Debian's does): the compression a payload
    pays for while its ack waits."""
    client = await start(aiohttp_client, tmp_path, pg_url)
    resp = await client.post("/alertmanager", json=payload("captured-firing"))
    inbox_id = (await resp.json())["inbox_id"]
    with psycopg.connect(pg_url) as conn:
        column = conn.execute(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = 'inbox'::regclass AND attname = 'body'"
        ).fetchone()
        stored = conn.execute(
            "SELECT pg_column_compression(body) FROM inbox WHERE id = %s", (inbox_id,)
        ).fetchone()
    assert column == ("l",)
    assert stored == ("lz4",)  # the captured payload is above TOAST's threshold


async def test_a_commit_held_up_by_a_lock_fails_in_time_and_the_next_one_succeeds(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    """Someone holds the inbox locked (a manual migration, a VACUUM FULL): the webhook's
    commit gives up after ``store.busy_timeout`` with a 503, which Alertmanager retries,
    instead of holding every ack behind it until the lock goes."""
    client = await start_with(aiohttp_client, tmp_path, store={"url": pg_url, "busy_timeout": "1s"})
    with psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        resp = await client.post("/alertmanager", json=group(1))
        waited = time.monotonic() - started
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"] == "store_unavailable"
        assert 0.9 <= waited < 5, waited
        locker.rollback()  # the lock goes
    resp = await client.post("/alertmanager", json=group(1))
    assert resp.status == 200, await resp.text()


async def test_payloads_are_stored_exactly_as_sent_whatever_their_text(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    """The writer binds its arrays in PostgreSQL's binary format itself: every kind of
    text comes back as it went in (NUL, which PostgreSQL's text cannot hold, as U+FFFD),
    NULLs stay NULL, and times keep every digit."""
    await start(aiohttp_client, tmp_path, pg_url)  # the schema
    texts = [
        "",
        "plain",
        "Ünïcødé 🚨 ✓ \U0001d518",
        "a\x00b",
        "\u202etxt",
        "x" * 70_000,
        '{"a": [1]}',
    ]
    rows = [
        (f"source {i}", text, 1_765_000_000.123456 + i, None if i % 2 else 1e-3 * i, None)
        for i, text in enumerate(texts)
    ] + [("alertmanager", "{}", 0.0, 2.5, "duplicate")]
    writer = Writer(pg_url, 5.0)
    try:
        replies = writer.insert([rows[:3], rows[3:4], rows[4:]])
    finally:
        assert writer.conn is not None
        writer.conn.close()
    assert [reply[0] for reply in replies] == ["ok", "ok", "ok"]
    ids = [row_id for reply in replies for row_id in reply[1]]
    with psycopg.connect(pg_url) as conn:
        stored = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT id, source, body, received_at, processed_at, result FROM inbox"
            )
        }
    expected = [
        (source, body.replace("\x00", "\ufffd"), at, done, result)
        for source, body, at, done, result in rows
    ]
    assert [stored[row_id] for row_id in ids] == expected


async def test_a_refused_statement_keeps_the_connection_and_a_lost_one_is_replaced(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    await start(aiohttp_client, tmp_path, pg_url)
    writer = Writer(pg_url, 5.0)
    row = ("alertmanager", "{}", 1.0, None, None)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("ALTER TABLE inbox ADD CONSTRAINT no_more CHECK (received_at < 0) NOT VALID")
        [refused] = writer.insert([[row]])
        assert refused[:2] == ("error", "DatabaseError") and "no_more" in refused[3]
        kept = writer.conn
        assert kept is not None and not kept.closed  # a refused statement: still good
        admin.execute("ALTER TABLE inbox DROP CONSTRAINT no_more")
        [(status, [first])] = writer.insert([[row]])
        assert status == "ok" and writer.conn is kept
        backend = kept.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        [lost] = writer.insert([[row]])
        assert lost[:2] == ("error", "OperationalError")
        [(status, [second])] = writer.insert([[row]])  # on a new connection
        assert status == "ok" and second > first
        assert writer.conn is not None and writer.conn.info.backend_pid != backend
        writer.conn.close()
