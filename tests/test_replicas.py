"""Two replicas on one PostgreSQL, as behind an Alertmanager HA pair: both receive every
group, and each incident is opened once, posted to Slack once and paged once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from fakes import FakePagerDuty, FakeSlack
from pagerduty_kit import SEVERITY_MAP, alert_group, pd_section
from slackkit import slack_settings

GROUPS = 6
LEASE = 5.0


async def replica(
    aiohttp_client: Any, tmp_path: Path, pg_url: str, slack: FakeSlack, pd: FakePagerDuty
) -> TestClient:
    settings = slack_settings(
        tmp_path,
        slack,
        workers={"poll_interval": 0.05},
        sections={
            "store": {"url": pg_url, "lease": LEASE},
            "pagerduty": pd_section(pd),
            "incidents": {"severity_map": SEVERITY_MAP},
        },
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


def top_level_posts(slack: FakeSlack) -> list[Any]:
    return [c for c in slack.calls("chat.postMessage") if not c.body.get("thread_ts")]


async def quiet(clients: list[TestClient], timeout: float = 30.0) -> None:
    """Until no replica has a payload to apply or a job due (timers wait for later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = [await c.app[keys.STORE].stats() for c in clients]
        if all(s.inbox_depth == 0 and s.jobs_pending == 0 for s in stats):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"still busy: {stats}")


async def test_an_ha_pair_sends_every_group_to_both_replicas(
    aiohttp_client: Any,
    tmp_path: Path,
    pg_url: str,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    replicas = [
        await replica(aiohttp_client, tmp_path / name, pg_url, fake_slack, fake_pagerduty)
        for name in ("a", "b")
    ]
    for client in replicas:
        ready = await (await client.get("/readyz")).json()
        assert ready["store"] == {"backend": "postgresql", "writable": True}

    groups = [alert_group(service=f"svc-{n}", fingerprint=f"fp{n:06d}") for n in range(GROUPS)]
    # Each Alertmanager of the pair sends each group to each replica: four deliveries.
    sends = [c.post("/alertmanager", json=g) for g in groups for c in replicas * 2]
    answers = await asyncio.gather(*sends)
    assert [r.status for r in answers] == [200] * len(sends)

    await quiet(replicas)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        triggers = [e for e in fake_pagerduty.events if e["event_action"] == "trigger"]
        if len(top_level_posts(fake_slack)) >= GROUPS and len(triggers) >= GROUPS:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # a duplicate would have time to show up
    await quiet(replicas)

    incidents = await replicas[0].app[keys.STORE].list_incidents(limit=100)
    assert len(incidents) == GROUPS
    assert len({i.group_hash for i in incidents}) == GROUPS
    assert len(top_level_posts(fake_slack)) == GROUPS
    triggers = [e for e in fake_pagerduty.events if e["event_action"] == "trigger"]
    assert sorted(e["dedup_key"] for e in triggers) == sorted(i.key for i in incidents)


async def test_jobs_of_a_replica_that_died_run_on_another_after_their_lease(
    aiohttp_client: Any,
    tmp_path: Path,
    pg_url: str,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    dying = await replica(aiohttp_client, tmp_path / "a", pg_url, fake_slack, fake_pagerduty)
    await dying.app[keys.RUNNER].stop()  # it takes jobs below, and never runs them
    assert (await dying.post("/alertmanager", json=alert_group())).status == 200
    await dying.app[keys.INBOX].drain()
    store, kinds = dying.app[keys.STORE], dying.app[keys.HANDLERS].kinds
    held = await store.claim_jobs(time.time(), 100, kinds)
    claimed = time.monotonic()
    assert held
    await dying.close()  # gone without finishing them: their leases (5 s) run on

    started = time.monotonic()
    survivor = await replica(aiohttp_client, tmp_path / "b", pg_url, fake_slack, fake_pagerduty)
    while not (top_level_posts(fake_slack) and fake_pagerduty.events):
        assert time.monotonic() - started < 20, "the held jobs were not taken over"
        await asyncio.sleep(0.1)
    assert time.monotonic() - claimed >= LEASE - 0.5  # not before the lease ran out
    await quiet([survivor])
    assert len(top_level_posts(fake_slack)) == 1
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]
