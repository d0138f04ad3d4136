"""The inbox writer: webhook payloads are committed by a child process of the server.

What a user relies on: an acknowledged payload is on disk; a writer that dies costs the
requests it held a 503 (Alertmanager retries them) and the next webhook is served by a
new one; a Ctrl-C in the terminal does not stop it before the server has drained; it
never outlives the server, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import signal
import sqlite3
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.alerts import parse_group
from bot.core.incidents import Incident
from bot.settings import Severity
from bot.store.base import IncidentChange
from bot.store.inbox_child import WriteLock
from bot.store.inbox_writer import InboxWriter, WriterError, unpack
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from conftest import API, make_settings, payload
from serving import ServeProcess
from test_crash import group


def urgent_waiting(db: str) -> bool:
    """Whether an urgent commit (the inbox writer's) is waiting for the write lock: it
    holds the ``-writer.want`` file exclusively while it waits."""
    fd = os.open(f"{db}-writer.want", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def until_urgent_waiting(db: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not urgent_waiting(db):
        assert time.monotonic() < deadline, "the writer never began to wait for the lock"
        await asyncio.sleep(0.005)


async def start(aiohttp_client: Any, tmp_path: Path, **sections: Any) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(make_settings(tmp_path, **sections)))
    return client


def writer_pid(client: TestClient) -> int:
    """The server's inbox writer, on either store."""
    store = client.app[keys.STORE]
    assert isinstance(store, SqliteStore | PostgresStore)
    pid = store.inbox_writer_pid
    assert pid is not None and pid != os.getpid()
    return pid


def process_state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat, or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def inbox_rows(db: Path) -> list[tuple[int, str | None]]:
    """The rows of the inbox's own file, as the writer stored them."""
    conn = sqlite3.connect(f"{db}-inbox")
    try:
        return conn.execute("SELECT id, result FROM inbox ORDER BY id").fetchall()
    finally:
        conn.close()


async def gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (a zombie is reaped by its parent: not running)."""
    for _ in range(int(within / 0.05)):
        if process_state(pid) in (None, "Z", "X"):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_repeat_is_stored_as_processed_before_the_ack(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    first = await client.post("/alertmanager", json=payload("captured-firing"))
    assert (await first.json())["duplicate"] is False
    await client.app[keys.INBOX].drain()
    again = await client.post("/alertmanager", json=payload("captured-firing"))
    answer = await again.json()
    assert again.status == 200 and answer["duplicate"] is True
    # No worker has run since: the row was written already processed, as a repeat.
    rows = inbox_rows(tmp_path / "alertpilot.db")
    assert rows[-1] == (answer["inbox_id"], "duplicate")
    assert await client.app[keys.STORE].pending_payloads(10) == []
    metrics = await (await client.get("/metrics")).text()
    assert "alertpilot_duplicate_deliveries_total 1.0" in metrics


async def test_a_killed_writer_is_replaced_and_nothing_is_lost(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    first = writer_pid(client)
    assert (await client.post("/alertmanager", json=group(1))).status == 200
    os.kill(first, signal.SIGKILL)
    assert await gone(first)
    await asyncio.sleep(0.1)  # the server notices the exit
    resp = await client.post("/alertmanager", json=group(2))
    assert resp.status == 200, await resp.text()
    assert writer_pid(client) != first
    await client.app[keys.INBOX].drain()
    incidents = (await (await client.get("/api/v1/incidents", headers=API)).json())["incidents"]
    assert len(incidents) == 2


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Config sections for a store of each backend (PostgreSQL: a fresh database)."""
    if request.param == "sqlite":
        return {}
    return {"store": {"url": request.getfixturevalue("pg_url")}}


async def test_requests_held_by_a_dying_writer_get_503_and_a_retry_succeeds(
    aiohttp_client: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    client = await start(aiohttp_client, tmp_path, **backend)
    pid = writer_pid(client)
    os.kill(pid, signal.SIGSTOP)  # the writer hangs: webhooks queue up behind it
    try:
        posts = [asyncio.create_task(client.post("/alertmanager", json=group(i))) for i in range(5)]
        store = client.app[keys.STORE]
        assert isinstance(store, SqliteStore | PostgresStore)
        deadline = time.monotonic() + 10
        while store._inbox._pending or len(store._inbox._batches) < 2:  # one, then four
            assert time.monotonic() < deadline, "the webhooks never reached the writer"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not any(post.done() for post in posts)  # no ack before the commit
    finally:
        os.kill(pid, signal.SIGKILL)
    answers = [await post for post in posts]
    for resp in answers:
        assert resp.status == 503
        assert (await resp.json())["error"] == "store_unavailable"
    assert await gone(pid)
    for i in range(5):  # Alertmanager's retries, served by a new writer
        assert (await client.post("/alertmanager", json=group(i))).status == 200
    assert writer_pid(client) != pid
    await client.app[keys.INBOX].drain()
    incidents = (await (await client.get("/api/v1/incidents", headers=API)).json())["incidents"]
    assert len(incidents) == 5


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[ServeProcess, int]]:
    """``alertpilot serve`` and the pid of its one inbox writer; stopped whatever happens."""
    server = ServeProcess(tmp_path)
    try:
        await server.start()
        assert server.proc is not None
        writers = child_pids(server.proc.pid)
        assert len(writers) == 1
        yield server, writers[0]
    finally:
        await server.stop()


async def test_ctrl_c_reaches_the_server_not_the_writer(tmp_path: Path) -> None:
    """SIGINT to the server's process group (a Ctrl-C): the server drains, the webhook
    that is being committed is acknowledged, and only then does the writer stop."""
    async with serving(tmp_path) as (server, writer):
        assert server.proc is not None
        os.kill(writer, signal.SIGINT)  # a Ctrl-C reaches every process of the terminal
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{server.url}/alertmanager", json=group(7)) as resp,
        ):
            assert resp.status == 200
        assert child_pids(server.proc.pid) == [writer]  # still the same writer
        server.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(server.proc.wait(), 30) == 0
        assert await gone(writer)
        assert len(inbox_rows(server.db)) == 1


async def test_the_writer_does_not_outlive_a_killed_server(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, writer):
        await server.kill()
        assert await gone(writer)


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(child) for child in children)


async def test_the_write_lock_is_one_writer_at_a_time(tmp_path: Path) -> None:
    """The store thread and the writer process take turns; a writer that cannot get the
    lock within the busy timeout fails as SQLite does, and gets it once it is free."""
    db = str(tmp_path / "alertpilot.db")
    first, second = WriteLock(db, timeout=0.2), WriteLock(db, timeout=0.2)
    try:
        with first:
            began = time.monotonic()
            with pytest.raises(sqlite3.OperationalError, match="database is locked"), second:
                pass
            assert 0.2 <= time.monotonic() - began < 1.0
        began = time.monotonic()
        with second:
            assert time.monotonic() - began < 0.05  # free at once
    finally:
        first.close()
        second.close()


def test_a_waiting_webhook_commit_goes_before_the_next_background_transaction(
    tmp_path: Path,
) -> None:
    """The inbox writer (urgent) waits for the transaction in progress, not for the run
    of transactions the store thread starts one after another."""
    db = str(tmp_path / "alertpilot.db")
    store, webhook = WriteLock(db, timeout=5), WriteLock(db, timeout=5, urgent=True)
    order: list[str] = []
    holding, waiting = threading.Event(), threading.Event()

    def background() -> None:  # back-to-back transactions, as the store thread runs them
        for n in range(3):
            with store:
                order.append(f"background {n}")
                holding.set()
                if n == 0:
                    waiting.wait(5)  # until the webhook's commit waits for this one
                time.sleep(0.05)

    def commit() -> None:
        with webhook:
            order.append("webhook")

    try:
        busy = threading.Thread(target=background)
        busy.start()
        assert holding.wait(5)  # the first background transaction holds the lock
        urgent = threading.Thread(target=commit)
        urgent.start()
        deadline = time.monotonic() + 10
        while not urgent_waiting(db):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        waiting.set()
        busy.join(5)
        urgent.join(5)
        assert order == ["background 0", "webhook", "background 1", "background 2"]
    finally:
        store.close()
        webhook.close()


async def test_the_writer_process_commits_between_background_transactions(
    tmp_path: Path,
) -> None:
    """The real writer takes the inbox's lock as the urgent one: a webhook's commit does
    not wait out a run of back-to-back transactions of the store's on the inbox's file."""
    db = str(tmp_path / "alertpilot.db")
    store = SqliteStore(db, clock=time.time)
    await store.open()
    background = WriteLock(store.inbox_path, timeout=5)
    stop = threading.Event()

    def busy() -> None:  # 0.1 s transactions, one after another, for up to 3 s
        deadline = time.monotonic() + 3
        while not stop.is_set() and time.monotonic() < deadline:
            with background:
                time.sleep(0.1)

    worker = threading.Thread(target=busy)
    try:
        await store.enqueue_payload("alertmanager", '{"warm": 1}')  # the writer is up
        worker.start()
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await store.enqueue_payload("alertmanager", '{"probe": 1}')
        assert time.monotonic() - began < 1.0
    finally:
        stop.set()
        await asyncio.to_thread(worker.join, 5)
        background.close()
        await store.close()


async def test_a_webhook_commit_does_not_wait_for_a_write_to_the_store(tmp_path: Path) -> None:
    """The inbox is a file of its own: a write transaction on the store's file (here held
    by another connection) does not delay a webhook's commit, and the payload is
    processed once the store's file is free again."""
    db = str(tmp_path / "alertpilot.db")
    store = SqliteStore(db, clock=time.time, busy_timeout=10)
    await store.open()
    other = sqlite3.connect(db, isolation_level=None)
    try:
        await store.enqueue_payload("alertmanager", '{"warm": 1}')  # the writer is up
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO kv (key, value) VALUES ('held', 'by another writer')")
        began = time.monotonic()
        inbox_id = await store.enqueue_payload("alertmanager", '{"probe": 1}')
        assert time.monotonic() - began < 0.5
        marking = asyncio.ensure_future(store.skip_payloads([inbox_id], "duplicate", time.time()))
        await asyncio.sleep(0.3)
        assert not marking.done()  # the store's own write waits for the other writer
        other.execute("COMMIT")
        await marking
        assert [item.id for item in await store.pending_payloads(10)] == [1]
    finally:
        other.close()
        await store.close()


async def test_a_change_to_an_incident_leaves_the_inbox_free_for_webhooks(
    tmp_path: Path,
) -> None:
    """A transaction that changes an incident holds the store file's write lock from its
    start (so what it reads is current), and not the inbox's: a webhook committed by the
    inbox writer meanwhile does not find the inbox locked and sleep in SQLite's busy
    handler until the change is done."""
    db = str(tmp_path / "alertpilot.db")
    store = SqliteStore(db, clock=time.time)
    await store.open()
    try:
        text = json.dumps(payload("captured-firing"))
        inbox_id = await store.enqueue_payload("alertmanager", text)
        applied = await store.apply_group(inbox_id, parse_group(text), Severity.P1, time.time())
        assert applied.incident_id is not None
        seen: dict[str, str] = {}

        def free(path: str) -> str:
            other = sqlite3.connect(path, isolation_level=None, timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                return "free"
            except sqlite3.OperationalError as exc:
                return str(exc)
            finally:
                other.close()

        def change(incident: Incident) -> IncidentChange:  # runs inside the transaction
            seen["store"], seen["inbox"] = free(db), free(store.inbox_path)
            return IncidentChange(data={"probe": 1})

        await store.change_incident(applied.incident_id, change, now=time.time())
        assert seen == {"store": "database is locked", "inbox": "free"}
    finally:
        await store.close()


async def test_a_store_opened_for_the_cli_commits_on_its_own_thread(tmp_path: Path) -> None:
    """``alertpilot incidents``, ``simulate`` and ``explain`` take no webhooks: their store
    starts no writer process, and what it does write still goes in."""
    store = SqliteStore(str(tmp_path / "cli.db"), clock=time.time, inbox_writer=False)
    await store.open()
    try:
        assert store.inbox_writer_pid is None
        inbox_id = await store.enqueue_payload("alertmanager", '{"probe": 1}')
        [item] = await store.pending_payloads(10)
        assert (item.id, item.body) == (inbox_id, '{"probe": 1}')
    finally:
        await store.close()


def wal_size(db: str) -> int:
    return os.path.getsize(f"{db}-wal") if os.path.exists(f"{db}-wal") else 0


async def test_the_inbox_wal_starts_again_instead_of_growing(tmp_path: Path) -> None:
    """The writer checkpoints its file between commits, so its WAL is reused from the
    beginning rather than grown: 4 MB of payloads, one at a time (the writer idle in
    between) or all at once (always one waiting), leave a WAL of a few hundred KB or a
    few MB, not the 10 MB and more they make without checkpoints."""
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=time.time)
    await store.open()
    body = secrets.token_urlsafe(6000)  # 8,000 characters that compress by a quarter only
    try:
        for _ in range(500):  # one at a time: checkpoints from 256 KiB, when idle
            await store.enqueue_payload("alertmanager", body)
            # Idle: the writer looks for a waiting request right after it answers, and
            # on a loaded machine the next one could otherwise already be there.
            await asyncio.sleep(0.005)
        one_by_one = wal_size(store.inbox_path)
        flood = [store.enqueue_payload("alertmanager", body) for _ in range(1500)]
        await asyncio.gather(*flood)  # 12 MB at once: from 4 MiB on, checkpoints anyway
        at_once = wal_size(store.inbox_path)
        assert len(await store.pending_payloads(5000)) == 2000
    finally:
        await store.close()
    assert one_by_one < 1_500_000, one_by_one
    assert at_once < 10_000_000, at_once


async def test_the_store_wal_starts_again_after_each_checkpoint(tmp_path: Path) -> None:
    """The store thread checkpoints its own file between transactions, so the WAL does
    not grow from one round of writes to the next."""
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=time.time)
    await store.open()
    try:
        sizes = []
        for second in range(3):
            for n in range(300):
                await store.enqueue_job("notify.test", f"{second}-{n}", due_at=time.time() + 60)
            await asyncio.sleep(0.5)  # a checkpoint runs every 0.2 s
            sizes.append(wal_size(store.path))
    finally:
        await store.close()
    # Without checkpoints the WAL only grows: three rounds make it three times the first.
    # With them it holds what was written since the last one, which depends on how fast
    # the machine wrote each round: hence the room up to twice.
    assert sizes[0] > 0 and sizes[2] <= sizes[0] * 2, sizes


def wal_commits(path: str) -> int:
    """Transactions in a WAL since it last started again: frames whose header records
    the database size after a commit (SQLite's WAL format: a 32-byte file header, then
    per frame a 24-byte header and one page)."""
    data = Path(f"{path}-wal").read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    frames = range(32, len(data) - 24 - page_size + 1, 24 + page_size)
    salt = data[16:24]
    return sum(
        1
        for at in frames
        if data[at + 8 : at + 16] == salt and int.from_bytes(data[at + 4 : at + 8], "big")
    )


async def test_batches_waiting_for_the_writer_share_one_commit(tmp_path: Path) -> None:
    """What reaches the writer while it commits goes into its next transaction whole:
    three batches queued behind a commit held up by the lock make one commit, not three,
    and each still gets its own ids, in the order sent."""
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=time.time)
    await store.open()
    await store.close()  # the files and schema, and nothing else writing
    writer = InboxWriter(store.inbox_path, busy_timeout=5)
    held = WriteLock(store.inbox_path, timeout=5)
    try:
        await writer.start()
        before = wal_commits(store.inbox_path)
        with held:
            first = asyncio.ensure_future(writer.insert([("alertmanager", "a", 1.0, None, None)]))
            await until_urgent_waiting(store.inbox_path)  # "a" is in the writer, waiting
            queued = [
                asyncio.ensure_future(writer.insert([("alertmanager", body, 1.0, None, None)]))
                for body in ("b", "c", "d")
            ]
            pinged = asyncio.ensure_future(writer.ping())  # not an insert: not merged
            after = asyncio.ensure_future(writer.insert([("alertmanager", "e", 1.0, None, None)]))
            await asyncio.sleep(0.2)
        ids = [await first] + [await one for one in queued]
        await pinged
        assert ids == [[1], [2], [3], [4]]
        assert await after == [5]
        assert wal_commits(store.inbox_path) - before == 3  # a; b, c and d; e
    finally:
        held.close()
        await writer.close()
    assert _bodies(store.inbox_path) == ["a", "b", "c", "d", "e"]


async def test_a_shared_commit_that_fails_fails_every_batch_in_it(tmp_path: Path) -> None:
    """Batches that share a transaction share its fate: none is half stored, each is
    told, and the writer goes on with the next."""
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=time.time)
    await store.open()
    await store.close()
    writer = InboxWriter(store.inbox_path, busy_timeout=5)
    held = WriteLock(store.inbox_path, timeout=5)
    try:
        await writer.start()
        await writer.max_pages(0)  # the file cannot grow: a big payload does not fit
        with held:
            first = asyncio.ensure_future(writer.insert([("alertmanager", "a", 1.0, None, None)]))
            await until_urgent_waiting(store.inbox_path)
            queued = [
                asyncio.ensure_future(writer.insert([("alertmanager", body, 1.0, None, None)]))
                for body in ("b", secrets.token_hex(50_000), "c")
            ]
            await asyncio.sleep(0.2)
        assert await first == [1]
        for one in queued:
            with pytest.raises(WriterError, match="full"):
                await one
        assert await writer.insert([("alertmanager", "d", 1.0, None, None)]) == [2]
    finally:
        held.close()
        await writer.close()
    assert _bodies(store.inbox_path) == ["a", "d"]


def _bodies(path: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [unpack(body) for (body,) in conn.execute("SELECT body FROM inbox ORDER BY id")]
    finally:
        conn.close()


async def test_a_payload_goes_to_the_writer_at_once_and_later_ones_together(
    tmp_path: Path,
) -> None:
    """Group commit without waiting: the first payload is sent before the event loop
    turns again; those that come while it is out go four at a time, and the rest as
    soon as a batch comes back. Each gets its own id."""
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=time.time)
    await store.open()
    try:
        await store.enqueue_payload("alertmanager", '{"warm": 1}')  # the writer is up
        writer = store._writer
        assert writer is not None
        sent: list[int] = []
        send = writer.send_insert

        def counting(rows: list[Any], settled: Any) -> Any:
            sent.append(len(rows))
            return send(rows, settled)

        writer.send_insert = counting  # type: ignore[method-assign]
        one = asyncio.ensure_future(store.enqueue_payload("alertmanager", '{"n": 0}'))
        await asyncio.sleep(0)  # the task ran up to its wait for the commit
        assert sent == [1]
        await one
        sent.clear()
        many = [store.enqueue_payload("alertmanager", f'{{"n": {n}}}') for n in range(1, 101)]
        ids = await asyncio.gather(*many)
        assert sorted(ids) == list(range(ids[0], ids[0] + 100))
        assert sent == [1] + [4] * 24 + [3]
    finally:
        await store.close()


async def test_payloads_are_stored_compressed_and_read_back_as_received(
    tmp_path: Path,
) -> None:
    """The inbox keeps each body compressed, a third of its size for a real payload,
    and hands it back to processing exactly as received; a row stored as text (from
    before, or moved over from an old inbox) or zlib-compressed (by earlier versions)
    reads back as it is."""
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=time.time)
    await store.open()
    captured = group(7)
    captured["commonAnnotations"] = {"summary": "Ünïcødé 🚨 ✓ " * 20}
    body = json.dumps(captured, ensure_ascii=False)
    try:
        inbox_id = await store.enqueue_payload("alertmanager", body)
        conn = sqlite3.connect(store.inbox_path, timeout=5)
        try:
            [(stored,)] = conn.execute("SELECT body FROM inbox WHERE id = ?", (inbox_id,))
            with conn:
                conn.execute(
                    "INSERT INTO inbox (source, body, received_at) VALUES ('alertmanager', ?, ?)",
                    ('{"as": "text"}', time.time()),
                )
                conn.execute(
                    "INSERT INTO inbox (source, body, received_at) VALUES ('alertmanager', ?, ?)",
                    (zlib.compress(b'{"as": "zlib"}', 1), time.time()),
                )
        finally:
            conn.close()
        assert isinstance(stored, bytes) and len(stored) < len(body.encode()) / 3
        read = {item.id: item.body for item in await store.pending_payloads(10)}
        assert read == {
            inbox_id: body,
            inbox_id + 1: '{"as": "text"}',
            inbox_id + 2: '{"as": "zlib"}',
        }
    finally:
        await store.close()
