"""Slack faults: 5xx, 429 and a full outage. The webhook still answers at once, every
message arrives exactly once when Slack is back, the timeline records a send that gave up,
and /readyz and /metrics show the outbox backing up while alertpilot stays ready.

(tests/test_slack_outbox.py covers Retry-After pacing and a five-minute outage's replay;
these assert what the rest of the bot and an operator see meanwhile.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bot import keys
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind
from fakes import FakeSlack
from faultkit import ack, alert_group, quiet, readyz, scrape, until
from slackkit import CHANNEL, settle, slack_settings, start

SLACK_JOB = {"kind": "notify.slack"}


def delivered_tops(fake: FakeSlack) -> list[str]:
    """The text of each top-level message Slack accepted (one per incident)."""
    return [
        str(r.params["text"])
        for r in fake.calls("chat.postMessage")
        if r.status == 200 and "thread_ts" not in r.params
    ]


def titles(fake: FakeSlack) -> Counter[str]:
    return Counter(text.split(":", 1)[1].split("(")[0].strip() for text in delivered_tops(fake))


async def message_of(client: TestClient, fake: FakeSlack, incident_id: int) -> dict[str, Any]:
    incident = await client.app[keys.STORE].get_incident(incident_id)
    return fake.messages[(CHANNEL, incident.data["slack"]["ts"])]


async def test_5xx_is_retried_while_the_ack_and_the_pipeline_go_on(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    settings = slack_settings(
        tmp_path, fake_slack, graphs=False,
        workers={"backoff_base": 0.05, "backoff_max": 0.1, "max_attempts": 30},
    )  # fmt: skip
    client = await start(aiohttp_client, settings)
    fake_slack.fail_next(6, status=500, match="chat.postMessage")
    for n in range(3):
        await ack(client, alert_group(n))

    async def pipelines_done() -> bool:
        store = client.app[keys.STORE]
        incidents = [await store.get_incident(i.id) for i in await store.list_incidents()]
        return len(incidents) == 3 and all(
            any(e.kind == EventKind.PLAYBOOK for e in i.timeline) for i in incidents
        )

    # Slack failing holds up no other kind of job: every incident gets matched.
    await until(pipelines_done, what="the pipeline of every incident")
    assert (await readyz(client))[0] == 200
    await settle(client)

    assert titles(fake_slack) == Counter({"#1 Fault000": 1, "#2 Fault001": 1, "#3 Fault002": 1})
    assert [r.status for r in fake_slack.calls("chat.postMessage")].count(500) == 6
    metrics = await scrape(client)
    assert metrics.value("alertpilot_jobs_total", **SLACK_JOB, outcome="retry") >= 6
    assert metrics.value("alertpilot_jobs_failed") == 0
    assert metrics.value("alertpilot_jobs_pending") == 0
    for incident in await client.app[keys.STORE].list_incidents():
        timeline = (await client.app[keys.STORE].get_incident(incident.id)).timeline
        assert not [e for e in timeline if e.kind == EventKind.JOB_FAILED]


async def test_429_delays_only_slack(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack, graphs=False))
    fake_slack.rate_limit_next(1, retry_after=1, match="chat.postMessage")
    await ack(client, alert_group(0))
    limited = await until(lambda: _answered(fake_slack, 429), what="the rate-limited post")
    # Slack said "wait a second": meanwhile more alerts are acked at once.
    for n in range(1, 4):
        await ack(client, alert_group(n))
    await settle(client)

    posts = [r for r in fake_slack.calls("chat.postMessage") if r.status == 200]
    assert min(r.at for r in posts) - limited.at >= 0.95  # nothing sent while told to wait
    assert titles(fake_slack) == Counter({f"#{n + 1} Fault{n:03d}": 1 for n in range(4)})
    metrics = await scrape(client)
    assert metrics.value("alertpilot_jobs_total", **SLACK_JOB, outcome="retry") >= 1
    assert metrics.value("alertpilot_jobs_failed") == 0


async def _answered(fake: FakeSlack, status: int) -> Any:
    await asyncio.sleep(0)
    return next((r for r in fake.calls("chat.postMessage") if r.status == status), None)


async def test_outage_backs_up_the_outbox_then_drains_exactly_once(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    clock = ManualClock()
    settings = slack_settings(
        tmp_path, fake_slack, graphs=False,
        workers={"backoff_base": 1, "backoff_max": 60, "max_attempts": 12},
    )  # fmt: skip
    client = await start(aiohttp_client, settings, clock)
    app = client.app
    fake_slack.outage(True)

    pending: list[float] = []
    for n in range(3):
        await ack(client, alert_group(n))
        await quiet(client)
        pending.append((await scrape(client)).value("alertpilot_jobs_pending"))
    assert pending[0] > 0 and pending[0] < pending[1] < pending[2]  # the outbox grows
    await app[keys.ACTIONS].acknowledge(2, actor="@bob (U0BOB)", source="slack")

    for _ in range(12):  # two minutes of outage
        clock.advance(10)
        await quiet(client)
    metrics = await scrape(client)
    assert metrics.value("alertpilot_jobs_total", **SLACK_JOB, outcome="retry") >= 6
    assert metrics.value("alertpilot_jobs_pending") >= pending[2]
    assert metrics.value("alertpilot_jobs_failed") == 0
    status, body = await readyz(client)  # Slack down does not stop alertpilot taking alerts
    assert status == 200 and body["status"] == "ready"
    assert delivered_tops(fake_slack) == []

    fake_slack.outage(False)
    for _ in range(10):
        clock.advance(60)
        await quiet(client)

    assert titles(fake_slack) == Counter({"#1 Fault000": 1, "#2 Fault001": 1, "#3 Fault002": 1})
    replies = Counter(
        r.params["text"]
        for r in fake_slack.calls("chat.postMessage")
        if r.status == 200 and "thread_ts" in r.params
    )
    assert replies[":eyes: acknowledged by @bob (U0BOB) in Slack"] == 1
    assert all(count == 1 for count in replies.values()), replies
    assert "ACKNOWLEDGED" in str((await message_of(client, fake_slack, 2))["blocks"])
    metrics = await scrape(client)
    assert metrics.value("alertpilot_jobs_pending") == 0
    assert metrics.value("alertpilot_jobs_failed") == 0


async def test_outage_beyond_the_retries_is_on_the_timeline_and_heals(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    clock = ManualClock()
    settings = slack_settings(
        tmp_path, fake_slack, graphs=False,
        workers={"backoff_base": 1, "backoff_max": 1, "max_attempts": 3},
    )  # fmt: skip
    client = await start(aiohttp_client, settings, clock)
    app = client.app
    fake_slack.outage(True)
    await ack(client, alert_group(0))
    for _ in range(20):
        await quiet(client)
        clock.advance(2)

    incident = await app[keys.STORE].get_incident(1)
    failed = [e for e in incident.timeline if e.kind == EventKind.JOB_FAILED]
    assert failed, [e.kind for e in incident.timeline]
    assert failed[0].message.startswith("notify.slack failed: gave up after 3 attempts: ")
    assert "Slack answered service_unavailable" in failed[0].message
    metrics = await scrape(client)
    assert metrics.value("alertpilot_jobs_failed") == len(failed)
    assert metrics.value("alertpilot_jobs_total", **SLACK_JOB, outcome="failed") == len(failed)
    assert metrics.value("alertpilot_jobs_pending") == 0

    # Slack is back: the next change posts the message, once, showing where things stand.
    fake_slack.outage(False)
    await app[keys.ACTIONS].acknowledge(1, actor="@bob (U0BOB)", source="slack")
    await quiet(client)
    assert titles(fake_slack) == Counter({"#1 Fault000": 1})
    assert "ACKNOWLEDGED" in str((await message_of(client, fake_slack, 1))["blocks"])
