"""POST /pagerduty against replays: PagerDuty's v3 signature covers the body but no time, so
a captured delivery is signed for ever. Event ids are remembered for
``pagerduty.seen_event_retention`` whatever ``store.retention`` prunes, events older than
that are not applied, and ids older than that are forgotten."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Status
from fakes import FakePagerDuty
from pagerduty_kit import Bot, alert_group, start_bot

DAY = 86400.0
HOUR = 3600.0


async def paged_bot(
    aiohttp_client: Any, tmp_path: Path, fake: FakePagerDuty, clock: ManualClock, **sections: Any
) -> Bot:
    bot = await start_bot(aiohttp_client, tmp_path, fake, clock, **sections)
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    assert len(fake.events) == 1
    return bot


def seen_ids(tmp_path: Path) -> set[str]:
    """The PagerDuty event ids the store keeps."""
    path = f"file:{tmp_path}/alertpilot.db?mode=ro"
    with contextlib.closing(sqlite3.connect(path, uri=True)) as db:
        rows = db.execute("SELECT id FROM seen_events WHERE source = 'pagerduty'").fetchall()
    return {str(row[0]) for row in rows}


def ids(*events: dict[str, Any]) -> set[str]:
    return {str(event["event"]["id"]) for event in events}


def ago(bot: Bot, seconds: float) -> datetime:
    return datetime.fromtimestamp(bot.clock.now() - seconds, UTC)


async def status_of(bot: Bot, event: dict[str, Any]) -> str:
    status, answer = await bot.webhook(event)
    assert status == 200, answer
    assert answer["event"] == event["event"]["id"]
    return str(answer["status"])


async def test_a_replay_after_the_store_was_pruned_is_still_a_duplicate(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    """An acknowledgement withdrawn in PagerDuty, then its captured delivery sent again
    eight days later, after ``store.retention`` (1 h here) pruned the store: the id is
    still known, and the incident stays triggered."""
    bot = await paged_bot(
        aiohttp_client, tmp_path, fake_pagerduty, ManualClock(), store={"retention": "1h"}
    )
    key = (await bot.incident()).key
    ack = bot.event("incident.acknowledged", "PINC001", key, "Ada Lovelace")
    assert await status_of(bot, ack) == "applied"
    unack = bot.event("incident.unacknowledged", "PINC001", key, "Ada Lovelace")
    assert await status_of(bot, unack) == "applied"
    await bot.settle()
    assert (await bot.incident()).status is Status.TRIGGERED

    await bot.advance(8 * DAY)
    assert await bot.store.prune(bot.clock.now() - HOUR) > 0  # what the hourly pruning runs

    assert await status_of(bot, ack) == "duplicate"
    assert seen_ids(tmp_path) == ids(ack, unack)
    await bot.settle()
    incident = await bot.incident()
    assert incident.status is Status.TRIGGERED
    assert len(await bot.events(incident.id, EventKind.ACKNOWLEDGED)) == 1


async def test_an_event_older_than_the_window_is_not_applied(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_pagerduty: FakePagerDuty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its id may have been forgotten, so it cannot be told from a replay: answered 200
    "stale" (a 4xx would count towards PagerDuty disabling the subscription), counted,
    logged, and neither applied nor remembered."""
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    key = (await bot.incident()).key
    old = bot.event("incident.acknowledged", "PINC001", key, "Ada", occurred_at=ago(bot, 31 * DAY))
    with caplog.at_level(logging.WARNING, logger="bot.pagerduty.webhooks"):
        assert await status_of(bot, old) == "stale"
    assert f"PagerDuty webhook {old['event']['id']} (incident.acknowledged)" in caplog.text
    await bot.settle()
    incident = await bot.incident()
    assert incident.status is Status.TRIGGERED
    assert await bot.events(incident.id, EventKind.ACKNOWLEDGED) == []
    assert ids(old).isdisjoint(seen_ids(tmp_path))
    metrics = await (await bot.client.get("/metrics")).text()
    assert (
        'alertpilot_pagerduty_webhooks_total{event_type="incident.acknowledged",outcome="stale"}'
        " 1.0" in metrics
    )

    # a delivery PagerDuty held back for six days is applied
    late = bot.event("incident.acknowledged", "PINC001", key, "Ada", occurred_at=ago(bot, 6 * DAY))
    assert await status_of(bot, late) == "applied"
    await bot.settle()
    assert (await bot.incident()).status is Status.ACKNOWLEDGED


async def test_event_ids_are_forgotten_after_the_window(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await paged_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        pagerduty={"seen_event_retention": "10d"},
    )
    key = (await bot.incident()).key
    first = bot.event("incident.annotated", "PINC001", key, "Ada")
    assert await status_of(bot, first) == "applied"
    await bot.advance(6 * DAY)
    second = bot.event("incident.annotated", "PINC001", key, "Ada")
    assert await status_of(bot, second) == "applied"
    assert seen_ids(tmp_path) == ids(first, second)

    await bot.advance(5 * DAY)  # the first is 11 days old, the second 5
    third = bot.event("incident.annotated", "PINC001", key, "Ada")
    assert await status_of(bot, third) == "applied"
    assert seen_ids(tmp_path) == ids(second, third)
    # forgotten, and refused all the same
    assert await status_of(bot, first) == "stale"
    assert await status_of(bot, second) == "duplicate"
    notes = await bot.events((await bot.incident()).id, EventKind.NOTE)
    assert len([n for n in notes if n.message.startswith("note in PagerDuty")]) == 3


def downgrade(db: str, now: float) -> None:
    """Leave the store as the versions before ``seen_events`` left it: event ids in the
    key-value table, expiring 7 days after they were seen, the older ones gone."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.executescript(
            f"""
            BEGIN;
            INSERT INTO kv (key, value, expires_at)
                SELECT 'pagerduty:webhook:' || id, result, at + 604800.0 FROM seen_events
                WHERE at + 604800.0 > {now};
            DROP TABLE seen_events;
            DELETE FROM kv WHERE key = 'pagerduty:seen_since';
            PRAGMA user_version = 4;
            COMMIT;
            """
        )


async def test_ids_kept_by_an_earlier_version_still_count_after_the_upgrade(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    """The ids the earlier version still had move to ``seen_events``; an event older than
    its 7 days of memory is refused, though younger than the new window."""
    clock = ManualClock()
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    key = (await bot.incident()).key
    deliveries = []
    for wait in (10 * DAY, HOUR):  # acknowledged and withdrawn, twice, ten days apart
        for event_type in ("incident.acknowledged", "incident.unacknowledged"):
            event = bot.event(event_type, "PINC001", key, "Ada")
            assert await status_of(bot, event) == "applied"
            deliveries.append(event)
        await bot.advance(wait)
    await bot.client.close()
    downgrade(f"{tmp_path}/alertpilot.db", clock.now())

    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    old_ack, _, recent_ack, _ = deliveries
    assert seen_ids(tmp_path) == ids(*deliveries[2:])
    assert await status_of(bot, recent_ack) == "duplicate"
    assert await status_of(bot, old_ack) == "stale"
    await bot.settle()
    incident = await bot.incident()
    assert incident.status is Status.TRIGGERED
    assert len(await bot.events(incident.id, EventKind.ACKNOWLEDGED)) == 2
