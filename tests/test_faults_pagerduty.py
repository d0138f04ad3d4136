"""PagerDuty faults: 429 and 5xx from the Events API. The webhook still answers at once
and people's actions land at once; the page waits in the outbox and is sent exactly once
when PagerDuty answers again; a page that runs out of retries is on the timeline; and
/metrics shows the retries while /readyz stays ready.

(tests/test_pagerduty_events.py covers the backoff arithmetic and a restart mid-outage.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.core.clock import ManualClock
from bot.core.incidents import EventKind
from fakes import FakePagerDuty
from faultkit import ack, quiet, readyz, scrape
from pagerduty_kit import Bot, alert_group, start_bot

PD_JOB = {"kind": "notify.pagerduty"}


def group(n: int) -> dict[str, Any]:
    return alert_group(f"Fault{n}", fingerprint=f"fp{n:06d}")  # critical: P0, paged at once


async def advance(bot: Bot, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    await quiet(bot.client)


async def test_429_and_5xx_hold_the_page_and_nothing_else(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    clock = ManualClock()
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, clock, background=True,
        pagerduty={"retry_backoff": "10s"},
    )  # fmt: skip
    fake_pagerduty.rate_limit_next(1, retry_after=1)
    fake_pagerduty.fail_next(2, status=502)
    for n in range(3):
        await ack(bot.client, group(n))
    await quiet(bot.client)
    assert sorted(r.status for r in fake_pagerduty.requests) == [429, 502, 502]
    # People's actions do not wait for PagerDuty either.
    await bot.actions.acknowledge(2, actor="ada", source="slack")
    assert (await bot.store.get_incident(2)).status.value == "acknowledged"

    metrics = await scrape(bot.client)
    retry = {"action": "trigger", "outcome": "retry"}
    assert metrics.value("alertpilot_pagerduty_events_total", **retry) == 3
    assert metrics.value("alertpilot_jobs_total", **PD_JOB, outcome="retry") == 3
    assert metrics.value("alertpilot_jobs_pending") >= 3
    assert (await readyz(bot.client))[0] == 200
    for incident_id in (1, 2, 3):
        assert await bot.pages(incident_id) == []

    await advance(bot, clock, 10)
    assert fake_pagerduty.requests[-1].status == 202
    by_key: dict[str, list[str]] = {}
    for action, key in bot.actions_sent():
        by_key.setdefault(key, []).append(action)
    incidents = {i.id: i.key for i in await bot.store.list_incidents()}
    assert by_key == {
        incidents[1]: ["trigger"],
        incidents[2]: ["trigger", "acknowledge"],
        incidents[3]: ["trigger"],
    }
    for incident_id in (1, 2, 3):
        pages = [p.message for p in await bot.pages(incident_id)]
        assert pages[0].startswith("paged PagerDuty (critical): ")
        assert len([p for p in pages if p.startswith("paged")]) == 1
    await advance(bot, clock, 3600)  # nothing more is sent later
    assert len(fake_pagerduty.events) == 4
    metrics = await scrape(bot.client)
    assert metrics.value("alertpilot_pagerduty_events_total", action="trigger", outcome="sent") == 3
    assert metrics.value("alertpilot_jobs_pending") == 0
    assert metrics.value("alertpilot_jobs_failed") == 0


async def test_5xx_beyond_the_retries_is_on_the_timeline(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    clock = ManualClock()
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, clock, background=True,
        pagerduty={"retry_backoff": "10s"}, workers={"max_attempts": 3},
    )  # fmt: skip
    fake_pagerduty.outage(True)  # every call: 503
    await ack(bot.client, group(0))
    await quiet(bot.client)
    for _ in range(3):
        await advance(bot, clock, 40)
    assert fake_pagerduty.sends() == [503, 503, 503]
    # looked before each retry (the SDK tries a 503 twice), and sent anyway
    assert fake_pagerduty.lookups() == [503] * 4

    incident = await bot.incident()
    [failed] = await bot.events(incident.id, EventKind.JOB_FAILED)
    assert failed.message.startswith("notify.pagerduty failed: gave up after 3 attempts: trigger")
    assert "503" in failed.message
    metrics = await scrape(bot.client)
    assert metrics.value("alertpilot_jobs_failed") == 1
    assert metrics.value("alertpilot_jobs_total", **PD_JOB, outcome="failed") == 1
    assert (
        metrics.value("alertpilot_pagerduty_events_total", action="trigger", outcome="retry") == 3
    )

    # PagerDuty is back: escalating by hand pages once.
    fake_pagerduty.outage(False)
    await bot.actions.escalate(
        incident.id, actor="ada", source="slack", reason="PagerDuty was down"
    )
    await quiet(bot.client)
    assert bot.actions_sent() == [("trigger", incident.key)]
