"""Crash: SIGKILL ``alertpilot serve`` at random moments under load, restart, repeat.

A load generator posts distinct 3-alert groups (severity critical, mapped to P0, which
pages PagerDuty at once) continuously, retrying a payload until it is acknowledged, as
Alertmanager does. Meanwhile the server is killed with SIGKILL after a random 0.3-3 s
and started again, 20 times. After the last start the load stops and the queues drain;
then, from the store and the fakes' recordings:

- acknowledged alerts missing from the store (goal 0);
- incidents with more than one message of their own in Slack (goal 0);
- PagerDuty dedup_keys that got more than one trigger (goal 0).

A second run aims its kills (5 at an incident's Slack message, 5 at a PagerDuty trigger):
the fake takes the send and alertpilot is killed before the answer reaches it. Sends are
at least once, so this shows what a crash in that window costs.

Slack writes at 50 per second and PagerDuty takes 10,000 events a minute here: their
pace is not what this measures.

    .venv/bin/python bench/crash.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from common import (
    Alertpilot,
    Json,
    Row,
    StoreView,
    fingerprints,
    group_payload,
    post_webhook,
    settle,
)
from fakes_runner import Fakes, running_fakes

RATE = 10.0  # new groups per second
# PagerDuty's default pace (100 events a minute per routing key) is not what this measures
PD_FAST: dict[str, Any] = {"rate_limit_per_minute": 10_000}
P0_CONFIG: dict[str, Any] = {
    "incidents": {"severity_map": {"critical": "P0", "warning": "P2"}},
    "workers": {"poll_interval": 0.2},
}


class Load:
    """Posts group after group at ``RATE`` per second; each until acknowledged (bounded)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: dict[int, Json] = {}
        self.attempts = 0
        self.refused = 0
        self.stopping = False

    async def run(self, session: aiohttp.ClientSession) -> None:
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        for i in range(100_000):  # bounded; stopped long before
            if self.stopping:
                break
            tasks.append(asyncio.create_task(self._deliver(session, i)))
            delay = start + (i + 1) / RATE - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
        await asyncio.gather(*tasks)

    async def _deliver(self, session: aiohttp.ClientSession, i: int) -> None:
        body = group_payload(i, tag="crash")
        for _ in range(200):  # about a minute of retries at most
            self.attempts += 1
            if await post_webhook(session, self.url, body):
                self.acked[i] = body
                return
            self.refused += 1
            await asyncio.sleep(0.3)


async def crash_loop(server: Alertpilot, kills: int, rng: random.Random) -> list[float]:
    """Kill and restart ``kills`` times; return how long each restart took."""
    restarts = []
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.3, 3.0))
        server.kill()
        began = time.monotonic()
        await asyncio.to_thread(server.start)
        restarts.append(time.monotonic() - began)
    return restarts


async def aimed_kills(server: Alertpilot, fakes: Fakes, targets: list[str]) -> int:
    """Kill the moment the fake Slack took an incident's message (or the fake PagerDuty a
    trigger), before it answers; restart. Return how many kills landed."""
    landed = 0
    for target in targets:
        fakes.tripwire.arm(target, server.kill)
        if await asyncio.to_thread(fakes.tripwire.sprung.wait, 20.0):
            landed += 1
        fakes.tripwire.disarm()
        server.kill()  # no-op when the tripwire killed it already
        await asyncio.to_thread(server.start)
    return landed


async def measure(fakes: Fakes, tmp: Path, kills: int, aimed: list[str]) -> Row:
    server = Alertpilot(tmp, **fakes.sections(channel_rate=50.0, pagerduty=PD_FAST), **P0_CONFIG)
    view = StoreView(server.db)
    rng = random.Random(7)
    server.start()
    try:
        load = Load(server.url)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
            loader = asyncio.create_task(load.run(session))
            restarts = await crash_loop(server, kills, rng)
            landed = await aimed_kills(server, fakes, aimed) if aimed else 0
            await asyncio.sleep(2.0)  # load on the last life too
            load.stopping = True
            await loader
        settled = await asyncio.to_thread(settle, view, timeout=300.0, quiet=5)
        acked_fps = {fp for body in load.acked.values() for fp in fingerprints(body)}
        incidents = view.incidents()
        posts = fakes.own_posts()
        triggers = fakes.pd_triggers()
        return {
            "kills": kills,
            "aimed": len(aimed),
            "landed": landed,
            "restart_s": sum(restarts) / max(1, len(restarts)),
            "sent": len(load.acked),
            "attempts": load.attempts,
            "refused": load.refused,
            "acked_alerts": len(acked_fps),
            "missing": len(acked_fps - view.fingerprints()),
            "incidents": len(incidents),
            "dup_posts": sum(1 for p in posts.values() if len(p) > 1),
            "extra_posts": sum(len(p) - 1 for p in posts.values() if len(p) > 1),
            "unposted": sum(1 for i in incidents if i["id"] not in posts),
            "rollups": sum(1 for m in fakes.messages() if m.text.startswith("Alert storm:")),
            "dup_triggers": sum(1 for n in triggers.values() if n > 1),
            "extra_triggers": sum(n - 1 for n in triggers.values() if n > 1),
            "unpaged": sum(1 for i in incidents if triggers.get(dedup_key(i), 0) == 0),
            "settled": settled,
            "failed_jobs": view.failed_jobs(),
        }
    finally:
        server.stop()


def dedup_key(incident: Json) -> str:
    page = incident["data"].get("pagerduty") or {}
    return str(page.get("dedup_key") or incident["key"])


def rows_of(m: Row) -> list[Row]:
    title = f"crash ({m['kills']} SIGKILLs under load)"
    unsettled = "" if m["settled"] else "; jobs still due when the wait ended"
    return [
        {
            "benchmark": f"{title}: acknowledged alerts missing",
            "measured": f"{m['missing']} of {m['acked_alerts']} "
            f"({m['sent']} payloads acked, {m['refused']} refused while down)",
            "baseline": f"{m['acked_alerts']} acknowledged",
            "ratio": f"{m['missing'] / max(1, m['acked_alerts']):.3f}",
            "goal": "0",
            "met": m["missing"] == 0,
        },
        {
            "benchmark": f"{title}: duplicate Slack posts",
            "measured": f"{m['dup_posts']} incidents posted twice (+{m['extra_posts']}), "
            f"{m['unposted']} never posted, of {m['incidents']}; "
            f"{m['rollups']} roll-up(s){unsettled}",
            "baseline": f"{m['incidents']} incidents, one message each",
            "ratio": f"{m['extra_posts'] / max(1, m['incidents']):.3f}",
            "goal": "0",
            "met": m["dup_posts"] == 0,
        },
        {
            "benchmark": f"{title}: duplicate PagerDuty triggers",
            "measured": f"{m['dup_triggers']} dedup_keys triggered twice (+{m['extra_triggers']}), "
            f"{m['unpaged']} never paged, of {m['incidents']} P0 incidents{unsettled}",
            "baseline": f"{m['incidents']} incidents, one trigger each",
            "ratio": f"{m['extra_triggers'] / max(1, m['incidents']):.3f}",
            "goal": "0",
            "met": m["dup_triggers"] == 0,
        },
    ]


def aimed_row(m: Row) -> Row:
    missing = f"; {m['missing']} acknowledged alerts missing" if m["missing"] else ""
    return {
        "benchmark": f"crash, {m['aimed']} SIGKILLs aimed at a send (the fake took it, "
        "alertpilot never heard back)",
        "measured": f"{m['dup_posts']} incidents posted twice, {m['dup_triggers']} dedup_keys "
        f"triggered twice ({m['landed']} kills landed){missing}",
        "baseline": f"{m['aimed'] // 2} kills at a Slack post, {m['aimed'] - m['aimed'] // 2} "
        "at a PagerDuty trigger",
        "ratio": f"{(m['dup_posts'] + m['dup_triggers']) / max(1, m['landed']):.2f} per kill",
        "goal": "0 (sends are at least once: a repeat is expected here)",
        "met": m["dup_posts"] == 0 and m["dup_triggers"] == 0 and m["missing"] == 0,
    }


def run(quick: bool = False) -> list[Row]:
    kills, aimed = (5, 2) if quick else (20, 5)
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp, running_fakes() as fakes:
        random_kills = asyncio.run(measure(fakes, Path(tmp), kills, []))
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp, running_fakes() as fakes:
        targets = ["slack", "pagerduty"] * aimed
        aimed_kills_run = asyncio.run(measure(fakes, Path(tmp), 0, targets))
    for m in (random_kills, aimed_kills_run):
        if m["failed_jobs"]:
            print(f"crash: failed jobs {m['failed_jobs']}")
    return [*rows_of(random_kills), aimed_row(aimed_kills_run)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="5 random and 4 aimed SIGKILLs (20 and 10)"
    )
    for row in run(parser.parse_args().quick):
        print(row)
