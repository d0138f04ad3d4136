"""The inbox writer on PostgreSQL: webhook payloads are committed by a child process of
the server with a connection of its own, as on SQLite.

What a user relies on: an acknowledged payload is committed; the database's address and
password are not on any command line; a writer that hangs or dies costs the requests it
held a 503 (Alertmanager retries them) and the next webhook is served; a connection the
server dropped is opened again by the same writer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.store.postgres import PostgresStore
from conftest import API, make_settings, payload
from test_crash import group
from test_inbox_writer import gone


async def start(aiohttp_client: Any, tmp_path: Path, pg_url: str) -> TestClient:
    settings = make_settings(tmp_path, store={"url": pg_url})
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


def writer_pid(client: TestClient) -> int:
    store = client.app[keys.STORE]
    assert isinstance(store, PostgresStore)
    pid = store.inbox_writer_pid
    assert pid is not None and pid != os.getpid()
    return pid


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


async def test_requests_held_by_a_hung_writer_get_503_and_a_retry_succeeds(
    aiohttp_client: Any, tmp_path: Path, pg_url: str
) -> None:
    client = await start(aiohttp_client, tmp_path, pg_url)
    pid = writer_pid(client)
    os.kill(pid, signal.SIGSTOP)  # the writer hangs: webhooks queue up behind it
    try:
        posts = [asyncio.create_task(client.post("/alertmanager", json=group(i))) for i in range(5)]
        store = client.app[keys.STORE]
        assert isinstance(store, PostgresStore)
        deadline = time.monotonic() + 10
        while store._inbox._pending or len(store._inbox._batches) < 2:  # one, then four
            assert time.monotonic() < deadline, "the webhooks never reached the writer"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not any(post.done() for post in posts)  # no ack before the commit
    finally:
        os.kill(pid, signal.SIGKILL)
    for post in posts:
        resp = await post
        assert resp.status == 503
        assert (await resp.json())["error"] == "store_unavailable"
    assert await gone(pid)
    for i in range(5):  # Alertmanager's retries, served by a new writer
        assert (await client.post("/alertmanager", json=group(i))).status == 200
    assert writer_pid(client) != pid
    await client.app[keys.INBOX].drain()
    incidents = (await (await client.get("/api/v1/incidents", headers=API)).json())["incidents"]
    assert len(incidents) == 5


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
