"""Rate limits and outages: 429 Retry-After, a 5-minute outage, a storm of 200 incidents."""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bot import keys
from bot.core.clock import ManualClock
from conftest import make_settings, payload
from fakes import FakeSlack
from slackkit import CHANNEL, SECRET, settle, slack_settings, start


def group(n: int) -> dict[str, Any]:
    """A distinct alert group (its own incident) number ``n``."""
    body = copy.deepcopy(payload("captured-firing"))
    name = f"Storm{n:03d}"
    body["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    body["groupLabels"] = {"alertname": name}
    body["commonLabels"] = {**body["commonLabels"], "alertname": name}
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["labels"] = {**body["alerts"][0]["labels"], "alertname": name}
    body["alerts"][0]["fingerprint"] = f"{n:016x}"
    return body


def ok_posts(fake: FakeSlack) -> list[Any]:
    return [r for r in fake.calls("chat.postMessage") if r.status == 200]


async def test_429_retry_after_is_honoured(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack, graphs=False))
    fake_slack.rate_limit_next(1, retry_after=1, match="chat.postMessage")
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)
    limited, delivered = fake_slack.calls("chat.postMessage")[:2]
    assert limited.status == 429 and delivered.status == 200
    assert delivered.at - limited.at >= 0.95  # waited as told, not the runner's 10 ms backoff
    assert len(ok_posts(fake_slack)) == 1
    assert len(fake_slack.messages) == 1


async def test_five_minute_outage_delays_and_loses_nothing(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    settings = make_settings(
        tmp_path,
        slack={"bot_token": fake_slack.token, "signing_secret": SECRET,
               "api_url": fake_slack.base_url, "default_channel": CHANNEL,
               "channel_rate": 50, "graphs": False},
        # the shipped retry policy: 12 attempts, exponential backoff from 1 s up to 5 min
        workers={"backoff_base": 1, "backoff_max": 300, "max_attempts": 12},
    )  # fmt: skip
    client = await start(aiohttp_client, settings, clock)
    app = client.app
    fake_slack.outage(True)
    for n in range(3):
        await client.post("/alertmanager", json=group(n))
    await app[keys.INBOX].drain()
    actions = app[keys.ACTIONS]
    await actions.acknowledge(2, actor="@bob (U0BOB)", source="slack")
    await actions.note(3, actor="@carol (U0CAROL)", source="slack", text="looking at the db")

    async def run_for(seconds: int) -> None:
        for _ in range(seconds // 5):
            clock.advance(5)
            await app[keys.INBOX].drain()
            await app[keys.RUNNER].run_due()

    await run_for(300)
    # kept trying: each retry first asks Slack whether the lost post went out after all
    tries = fake_slack.calls("chat.postMessage") + fake_slack.calls("conversations.history")
    assert ok_posts(fake_slack) == [] and len(tries) > 3
    stats = await app[keys.STORE].stats()
    assert stats.jobs_failed == 0 and stats.jobs_pending > 0
    fake_slack.outage(False)
    await run_for(700)
    for _ in range(100):  # the app's own runner may still be finishing a claimed job
        if (stats := await app[keys.STORE].stats()).jobs_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert stats.jobs_failed == 0 and stats.jobs_pending == 0

    top = [r.params["text"] for r in ok_posts(fake_slack) if "thread_ts" not in r.params]
    assert sorted(t.split(":", 1)[1].split("(")[0].strip() for t in top) == [
        "#1 Storm000",
        "#2 Storm001",
        "#3 Storm002",
    ]
    replies = Counter(
        (r.params["thread_ts"], r.params["text"])
        for r in ok_posts(fake_slack)
        if "thread_ts" in r.params
    )
    texts = Counter(text for _, text in replies.elements())
    assert texts[":eyes: acknowledged by @bob (U0BOB) in Slack"] == 1
    assert texts[":memo: looking at the db"] == 1
    assert all(count == 1 for count in replies.values()), replies  # none twice in a thread
    incident = await app[keys.STORE].get_incident(2)
    message = fake_slack.messages[(CHANNEL, incident.data["slack"]["ts"])]
    assert "P1 · ACKNOWLEDGED" in str(message["blocks"])


async def test_storm_of_200_incidents_rolls_up_and_keeps_the_channel_rate(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    rate = 40.0  # fast for the test; the default is 1 per second
    settings = slack_settings(
        tmp_path, fake_slack, graphs=False, channel_rate=rate, storm_threshold=10,
        storm_window=60, workers={"lanes": {"notify": 16}},
    )  # fmt: skip
    client = await start(aiohttp_client, settings)
    for n in range(200):
        assert (await client.post("/alertmanager", json=group(n))).status == 200
    await settle(client, timeout=90)

    posts = ok_posts(fake_slack)
    top = [p for p in posts if "thread_ts" not in p.params]
    rollups = [p for p in top if p.params["text"].startswith("Alert storm")]
    assert len(rollups) == 1
    assert len(top) == 11  # the first 10 incidents, then one roll-up for the storm
    rollup_ts = next(ts for (ch, ts), m in fake_slack.messages.items()
                     if m["text"].startswith("Alert storm"))  # fmt: skip
    in_thread = [p for p in posts if p.params.get("thread_ts") == rollup_ts]
    assert len(in_thread) == 190
    rollup = fake_slack.messages[(CHANNEL, rollup_ts)]
    assert rollup["text"] == "Alert storm: 200 incidents"
    listed = rollup["blocks"][1]["text"]["text"]
    shown = listed.count("\n")  # one line per incident, then "...and N more"
    assert 20 <= shown <= 40 and f"…and {200 - shown} more" in listed
    incidents = await client.app[keys.STORE].list_incidents(limit=500)
    assert len({i.data["slack"]["ts"] for i in incidents}) == 200
    by_id = {i.id: i for i in incidents}
    for line in listed.splitlines()[:-1]:  # each named incident, with its own message's link
        incident = by_id[int(line.split("#", 1)[1].split()[0])]
        assert incident.title in line
        assert f"<{incident.data['slack']['permalink']}|open>" in line

    writes = sorted(
        r.at for r in fake_slack.requests
        if r.path in ("/api/chat.postMessage", "/api/chat.update") and r.status == 200
    )  # fmt: skip
    span = writes[-1] - writes[0]
    assert (len(writes) - 1) / span <= rate * 1.1, (len(writes), span)
    window = int(rate)  # never more than `rate` sends inside any second
    assert min(writes[i + window] - writes[i] for i in range(len(writes) - window)) >= 0.9


async def test_a_post_whose_answer_was_lost_is_found_not_repeated(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """Slack took the post but the answer never came back (a crash, a dropped reply):
    the retry finds the tagged message in the channel and posts nothing new."""
    clock = ManualClock(start=1_700_000_000.0 - 10)  # the fake's message clock starts here
    settings = make_settings(
        tmp_path,
        slack={"bot_token": fake_slack.token, "signing_secret": SECRET,
               "api_url": fake_slack.base_url, "default_channel": CHANNEL,
               "channel_rate": 50, "graphs": False},
        workers={"backoff_base": 1, "backoff_max": 5},
    )  # fmt: skip
    client = await start(aiohttp_client, settings, clock)
    app = client.app
    fake_slack.drop_answer_next("chat.postMessage")
    await client.post("/alertmanager", json=group(0))
    await app[keys.INBOX].drain()
    for _ in range(10):
        clock.advance(5)
        await app[keys.RUNNER].run_due()
    posted = [ts for (channel, ts), m in fake_slack.messages.items() if "thread_ts" not in m]
    assert len(posted) == 1  # the lost post was found, not repeated
    assert len(fake_slack.calls("chat.postMessage")) == 1
    incident = await app[keys.STORE].get_incident(1)
    assert incident.data["slack"]["ts"] == posted[0]


async def test_a_thread_reply_whose_answer_was_lost_is_found_not_repeated(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """The same for a reply in the incident's thread (here: the alerts resolved)."""
    fake_slack.clock = time.time  # message ts as Slack makes them, so the lookup finds them
    settings = slack_settings(
        tmp_path,
        fake_slack,
        graphs=False,
        workers={"backoff_base": 0.2, "backoff_max": 1},
        sections={"response": {"postmortem_severities": []}},  # the resolution alone
    )
    client = await start(aiohttp_client, settings)
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)
    [parent] = [ts for (_, ts), m in fake_slack.messages.items() if "thread_ts" not in m]
    fake_slack.drop_answer_next("chat.postMessage")
    await client.post("/alertmanager", json=payload("captured-resolved"))
    await settle(client)
    replies = [m["text"] for m in fake_slack.messages.values() if m.get("thread_ts") == parent]
    assert len(replies) == len(set(replies)) == 1  # the resolution, once
    assert "resolved" in replies[0]
    posts = [r for r in fake_slack.calls("chat.postMessage") if r.params.get("thread_ts")]
    assert [r.status for r in posts] == [502]  # the one post, its answer lost
    lookups = fake_slack.calls("conversations.replies")
    assert [r.status for r in lookups] == [200]  # the retry looked, found it, posted nothing
