"""The store locked by another process, or its disk full. While the inbox cannot commit
the webhook answers 503 at once (Alertmanager keeps the payload and retries) and 200
again when it can; while only the store's own file is locked, webhooks are still
acknowledged and processing waits. /readyz says 503 with the reason and
alertpilot_ready drops to 0 meanwhile; every payload acknowledged before, during or
after becomes an incident, and a job caught mid-flight is run again rather than left
hanging."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.incidents import EventKind
from conftest import make_settings
from fakes import FakeOpenAI
from faultkit import (
    ACK_BUDGET,
    ack,
    alert_group,
    exclusive_lock,
    limit_pages,
    quiet,
    readyz,
    scrape,
    timed_post,
    until,
)
from narrative_support import llm_section

HUGE = 1_000_000_000  # pages: room again


async def refused(client: TestClient, body: dict[str, Any]) -> None:
    """POST /alertmanager must answer 503 store_unavailable within the ack budget."""
    status, took = await timed_post(client, body)
    assert status == 503 and took < ACK_BUDGET, (status, took)


async def not_ready_while_locked(client: TestClient, refused_webhooks: int) -> None:
    """/readyz and the metrics tell an operator the store is locked, and how many
    webhooks it refused meanwhile."""
    status, ready = await readyz(client)
    assert status == 503 and ready["status"] == "not ready"
    assert ready["checks"]["store"] == "failing: store cannot commit: database is locked"
    metrics = await scrape(client)
    assert metrics.value("alertpilot_ready") == 0
    errors = metrics.value("alertpilot_store_errors_total", operation="alertmanager")
    refused = metrics.value(
        "alertpilot_webhooks_total", endpoint="alertmanager", result="store_unavailable"
    )
    assert errors == refused == refused_webhooks, (errors, refused)


async def all_processed(client: TestClient, count: int) -> None:
    """Every acknowledged payload is an incident, and no job is due, running or failed
    (timers due later, such as the LLM narrative's second chance, may wait)."""
    store = client.app[keys.STORE]

    async def done() -> bool:
        return len(await store.list_incidents(limit=100)) == count

    await until(done, what=f"{count} incidents")
    await quiet(client)
    stats = await store.stats()
    assert stats.inbox_depth == 0 and stats.jobs_failed == 0


async def test_a_locked_store_keeps_acking_and_loses_nothing(
    aiohttp_client: Any, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Another process holds ``BEGIN EXCLUSIVE`` on the store's file; ``store.busy_timeout``
    is how long a commit waits for it before giving up. Payloads are committed to the
    inbox's own file, so webhooks are still acknowledged; processing waits, and /readyz
    says why."""
    fake_openai.delay = 0.5  # a narrative job is in a provider call when the lock comes
    settings = make_settings(
        tmp_path, store={"busy_timeout": 0.1}, llm=llm_section(fake_openai, settle=0.05)
    )
    client = await aiohttp_client(create_app(settings))
    for n in range(2):
        await ack(client, alert_group(n))
    await until(lambda: asyncio.sleep(0, fake_openai.completions), what="an LLM call")

    async def both_opened() -> bool:
        return len(await client.app[keys.STORE].list_incidents(limit=100)) == 2

    await until(both_opened, what="the first two incidents")
    with exclusive_lock(settings.store.sqlite_path):
        await ack(client, alert_group(2))  # the ack path does not need the store's file
        await not_ready_while_locked(client, refused_webhooks=0)
        # the provider answers; the job cannot record that while the lock is held
        await until(
            lambda: asyncio.sleep(0, [r for r in fake_openai.requests if r.status == 200]),
            what="the LLM answer",
        )
        await asyncio.sleep(0.3)
        assert len(await client.app[keys.STORE].list_incidents(limit=100)) == 2

    status, ready = await readyz(client)
    assert status == 200 and ready["status"] == "ready"
    await all_processed(client, 3)
    metrics = await scrape(client)
    assert metrics.value("alertpilot_ready") == 1
    assert metrics.value("alertpilot_store_errors_total", operation="jobs") >= 1
    store = client.app[keys.STORE]
    for incident_id in (1, 2, 3):
        incident = await store.get_incident(incident_id)
        assert incident.data["narrative"]["source"] == "llm", incident_id
        written = [e for e in incident.timeline if e.kind == EventKind.NARRATIVE]
        assert [e.message for e in written].count("narrative updated (llm, gpt-4o-mini)") == 1


async def test_a_locked_inbox_refuses_then_recovers_and_loses_nothing(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Another process holds ``BEGIN EXCLUSIVE`` on the inbox's file: a payload cannot be
    made durable, so the webhook says 503 and Alertmanager keeps it for a retry."""
    settings = make_settings(tmp_path, store={"busy_timeout": 0.1})
    client = await aiohttp_client(create_app(settings))
    await ack(client, alert_group(0))

    with exclusive_lock(f"{settings.store.sqlite_path}-inbox"):
        await refused(client, alert_group(1))
        await not_ready_while_locked(client, refused_webhooks=1)

    await ack(client, alert_group(1))  # Alertmanager's retry of the refused payload
    status, ready = await readyz(client)
    assert status == 200 and ready["status"] == "ready"
    await all_processed(client, 2)
    assert (await scrape(client)).value("alertpilot_ready") == 1


async def test_a_full_disk_refuses_then_recovers_and_loses_nothing(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """A full disk, honestly: a small real filesystem needs root, so SQLite's own cap on
    the database size stands in for it. ``PRAGMA max_page_count`` set on the store's
    connection to the pages the file has makes every commit that needs one more page
    fail with SQLITE_FULL, "database or disk is full", the very error a full disk gives,
    through the same code path; raising the cap is freeing space."""
    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    await ack(client, alert_group(0))
    await all_processed(client, 1)
    await limit_pages(client, None)

    acked = 1
    for n in range(1, 40):  # the pages there are fill up
        status, took = await timed_post(client, alert_group(n))
        assert took < ACK_BUDGET
        if status == 503:
            break
        assert status == 200
        acked += 1
    else:
        raise AssertionError("the store never filled up")
    await refused(client, alert_group(n))  # and stays full
    status, ready = await readyz(client)
    assert status == 503
    assert ready["checks"]["store"].startswith("failing: a webhook commit failed ")
    assert ready["checks"]["store"].endswith("database or disk is full")
    metrics = await scrape(client)
    assert metrics.value("alertpilot_ready") == 0
    assert metrics.value("alertpilot_store_errors_total", operation="alertmanager") == 2

    await limit_pages(client, HUGE)  # space again
    await ack(client, alert_group(n))  # Alertmanager's retry
    assert (await readyz(client))[0] == 200
    await all_processed(client, acked + 1)
    assert (await scrape(client)).value("alertpilot_ready") == 1


async def test_old_payloads_and_finished_jobs_are_pruned_and_incidents_kept(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """``store.retention``: processed payloads and finished jobs older than it go (the
    newest payload stays, so no id is handed out twice); incidents stay."""
    client = await aiohttp_client(create_app(make_settings(tmp_path, store={"retention": "3s"})))
    for n in range(3):
        await ack(client, alert_group(n))
    await all_processed(client, 3)
    inbox = f"{tmp_path}/alertpilot.db-inbox"

    def rows() -> tuple[int, int]:
        with contextlib.closing(sqlite3.connect(inbox)) as payloads:
            kept = payloads.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        with contextlib.closing(sqlite3.connect(f"{tmp_path}/alertpilot.db")) as store:
            done = store.execute("SELECT COUNT(*) FROM jobs WHERE status = 'done'").fetchone()[0]
        return kept, done

    assert rows()[0] == 3 and rows()[1] > 0

    async def pruned() -> bool:
        return rows() == (1, 0)

    await until(pruned, what="payloads and finished jobs pruned", timeout=15)
    assert len(await client.app[keys.STORE].list_incidents(limit=100)) == 3
