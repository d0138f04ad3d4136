"""The store's commands on a real PostgreSQL: ``check`` reaches it, ``migrate`` brings its
schema up to date (twice at once is safe), ``store-copy`` moves a SQLite store into it;
and a store that cannot be reached is a clear error."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bot.cli import main
from bot.core.alerts import parse_group
from bot.core.clock import ManualClock
from bot.errors import StoreUnavailable
from bot.settings import Severity
from bot.store.base import Subscriptions
from bot.store.postgres import PostgresStore
from bot.store.postgres_schema import MIGRATIONS
from bot.store.sqlite import SqliteStore
from conftest import payload
from stack import free_port


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "alertpilot.yaml"
    path.write_text(f"store:\n  url: {url}\n  busy_timeout: 2s\nplaybooks:\n  paths: []\n")
    return path


def test_check_connects(tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(config(tmp_path, pg_url))]) == 0
    out = capsys.readouterr().out
    assert "store: PostgreSQL 1" in out and f"schema version 0 of {len(MIGRATIONS)}" in out


def test_check_names_an_unreachable_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db"
    assert main(["check", "--config", str(config(tmp_path, url))]) == 2
    err = capsys.readouterr().err
    assert "store.url: cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1" in err
    assert "hunter2" not in err


def test_serve_store_refuses_to_open_an_unreachable_database() -> None:
    store = PostgresStore(f"postgresql://127.0.0.1:{free_port()}/db", clock=ManualClock().now)
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL"):
        asyncio.run(store.open())


def test_a_bad_url_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(config(tmp_path, "postgresql://host:port/db"))]) == 2
    assert "store.url" in capsys.readouterr().err


def test_migrate_twice_at_once(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def both() -> list[list[int]]:
        stores = [PostgresStore(pg_url, clock=ManualClock().now) for _ in range(2)]
        return list(await asyncio.gather(*(s.migrate() for s in stores)))

    applied = asyncio.run(both())
    assert sorted(applied) == [[], list(range(1, len(MIGRATIONS) + 1))]
    assert main(["migrate", "--config", str(config(tmp_path, pg_url))]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_migrate_refuses_a_newer_schema(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE alertpilot_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        conn.execute("INSERT INTO alertpilot_schema VALUES (99, now())")
    with pytest.raises(Exception, match="newer than this alertpilot"):
        asyncio.run(PostgresStore(pg_url, clock=ManualClock().now).migrate())


async def _sqlite_with_history(path: Path, clock: ManualClock) -> int:
    subscribers = Subscriptions()
    subscribers.add("notify.test")
    store = SqliteStore(str(path), subscribers=subscribers, clock=clock.now)
    await store.open()
    try:
        text = json.dumps(payload("captured-firing"))
        inbox_id = await store.enqueue_payload("alertmanager", text)
        result = await store.apply_group(inbox_id, parse_group(text), Severity.P1, clock.now())
        await store.enqueue_payload("alertmanager", text)  # still pending
        await store.kv_set("k", "v", now=clock.now())
        await store.remember_event("pagerduty", "e1", "acked", at=clock.now())
        [job] = await store.claim_jobs(clock.now(), 10, ["notify.test"])  # running at the stop
        assert result.incident_id is not None and job.incident_id == result.incident_id
        return result.incident_id
    finally:
        await store.close()


def test_store_copy(tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    clock = ManualClock()
    db = tmp_path / "old.db"
    incident_id = asyncio.run(_sqlite_with_history(db, clock))
    argv = ["store-copy", "--from", f"sqlite:///{db}", "--to", pg_url]
    assert main(argv) == 0
    assert "incidents: 1 row(s)" in capsys.readouterr().out

    async def read() -> None:
        subscribers = Subscriptions()
        subscribers.add("notify.test")
        before = SqliteStore(str(db), clock=clock.now, inbox_writer=False)
        await before.open()
        old = await before.get_incident(incident_id)
        await before.close()
        store = PostgresStore(pg_url, subscribers=subscribers, clock=clock.now)
        await store.open()
        try:
            assert await store.get_incident(incident_id) == old
            [pending] = await store.pending_payloads(10)
            assert parse_group(pending.body).group_hash == old.group_hash
            assert await store.kv_get("k", clock.now()) == "v"
            assert await store.seen_event("pagerduty", "e1") == "acked"
            [job] = await store.claim_jobs(clock.now(), 10, ["notify.test"])  # runs again
            assert job.incident_id == incident_id
            # New rows are numbered after the copied ones.
            text = json.dumps(payload("captured-resolved"))
            new_id = await store.enqueue_payload("alertmanager", text)
            assert new_id > pending.id
            result = await store.apply_group(new_id, parse_group(text), Severity.P1, clock.now())
            assert result.incident_id == incident_id
        finally:
            await store.close()

    asyncio.run(read())
    assert main(argv) == 3  # not into a database that holds a history already
    assert "empty database" in capsys.readouterr().err


def test_store_copy_checks_its_arguments(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["store-copy", "--from", pg_url, "--to", pg_url]) == 2
    assert main(["store-copy", "--from", f"sqlite:///{tmp_path}/none.db", "--to", pg_url]) == 2
    assert "no such SQLite store" in capsys.readouterr().err


def test_serve_stops_at_once_when_the_database_is_out_of_reach(tmp_path: Path) -> None:
    url = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db"
    path = config(tmp_path, url)
    path.write_text(path.read_text() + f"server:\n  listen: 127.0.0.1:{free_port()}\n")
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert "store error: cannot connect to PostgreSQL at postgresql://u:***@" in done.stderr
    assert "hunter2" not in done.stderr and "Unclosed" not in done.stderr


def test_incidents_lists_from_postgresql(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fill() -> None:
        store = PostgresStore(pg_url, clock=ManualClock().now)
        await store.open()
        try:
            text = json.dumps(payload("captured-firing"))
            inbox_id = await store.enqueue_payload("alertmanager", text)
            await store.apply_group(inbox_id, parse_group(text), Severity.P1, 1.0)
        finally:
            await store.close()

    asyncio.run(fill())
    assert main(["incidents", "--config", str(config(tmp_path, pg_url))]) == 0
    assert "HighErrorRate" in capsys.readouterr().out
