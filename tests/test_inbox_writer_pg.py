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
