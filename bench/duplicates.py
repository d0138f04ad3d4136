"""Duplicates: every webhook delivered twice, as by both Alertmanagers of an HA pair.

Two runs on fresh servers and fakes, with the same alerts: the baseline posts each
webhook once; the measured run posts each twice, the copy at once (concurrently), a few
milliseconds or up to a second later. Each run fires distinct 3-alert groups (critical,
mapped to P0: PagerDuty is paged at once), waits for the queues to drain, resolves them
all, and drains again. Goal: no extra Slack posts (top-level or in threads) and no extra
PagerDuty events. ``chat.update`` counts are shown too; their number depends on timing
(debounced roll-up updates), so they are not part of the goal.

    .venv/bin/python bench/duplicates.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from common import Alertpilot, Json, Row, StoreView, group_payload, post_webhook, resolved, settle
from crash import P0_CONFIG, PD_FAST
from fakes_runner import running_fakes

RATE = 10.0  # groups per second


async def deliver(url: str, bodies: list[Json], copies: int, rng: random.Random) -> int:
    """Post every body ``copies`` times at ``RATE`` per second; return how many were refused."""
    refused = 0
    async with aiohttp.ClientSession() as session:

        async def send(body: Json, delay: float) -> None:
            nonlocal refused
            await asyncio.sleep(delay)
            if not await post_webhook(session, url, body):
                refused += 1

        tasks = []
        start = time.monotonic()
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            tasks.append(asyncio.create_task(send(body, 0.0)))
            for _ in range(copies - 1):
                delay = rng.choice([0.0, rng.uniform(0.0, 0.05), rng.uniform(0.05, 1.0)])
                tasks.append(asyncio.create_task(send(body, delay)))
        await asyncio.gather(*tasks)
    return refused


def one_run(groups: int, copies: int) -> Row:
    rng = random.Random(11)
    bodies = [group_payload(i, tag="dup") for i in range(groups)]
    with tempfile.TemporaryDirectory(prefix="bench-dup-") as tmp, running_fakes() as fakes:
        server = Alertpilot(
            Path(tmp), **fakes.sections(channel_rate=50.0, pagerduty=PD_FAST), **P0_CONFIG
        )
        view = StoreView(server.db)
        server.start()
        try:
            refused = asyncio.run(deliver(server.url, bodies, copies, rng))
            settled = settle(view, timeout=180.0, quiet=3)
            refused += asyncio.run(deliver(server.url, [resolved(b) for b in bodies], copies, rng))
            settled = settle(view, timeout=180.0, quiet=3) and settled
            writes = Counter(w.method for w in fakes.slack_writes())
            messages = fakes.messages()
            return {
                "incidents": view.incident_count(),
                "alerts": len(view.fingerprints()),
                "posts": len(messages),
                "top_level": sum(1 for m in messages if m.thread_ts is None),
                "updates": writes["chat.update"],
                "pd": Counter(str(e.get("event_action")) for e in fakes.pd_events()),
                "refused": refused,
                "settled": settled,
            }
        finally:
            server.stop()


def rows_of(groups: int, once: Row, twice: Row) -> list[Row]:
    title = f"duplicates ({groups} groups fired and resolved, every webhook twice)"
    pd_once, pd_twice = sum(once["pd"].values()), sum(twice["pd"].values())
    note = "" if once["settled"] and twice["settled"] else " (a run did not drain in time)"
    refused = (
        f"; {once['refused'] + twice['refused']} deliveries refused"
        if (once["refused"] or twice["refused"])
        else ""
    )
    return [
        {
            "benchmark": f"{title}: Slack posts",
            "measured": f"{twice['posts']} ({twice['top_level']} top-level), "
            f"{twice['updates']} updates; {twice['incidents']} incidents{note}{refused}",
            "baseline": f"{once['posts']} ({once['top_level']} top-level), "
            f"{once['updates']} updates; {once['incidents']} incidents, each webhook once",
            "ratio": f"{twice['posts'] / max(1, once['posts']):.2f}",
            "goal": "0 extra posts",
            "met": twice["posts"] <= once["posts"] and twice["incidents"] == once["incidents"],
        },
        {
            "benchmark": f"{title}: PagerDuty events",
            "measured": f"{pd_twice} ({dict(sorted(twice['pd'].items()))})",
            "baseline": f"{pd_once} ({dict(sorted(once['pd'].items()))}), each webhook once",
            "ratio": f"{pd_twice / max(1, pd_once):.2f}",
            "goal": "0 extra events",
            "met": pd_twice <= pd_once,
        },
    ]


def run(quick: bool = False) -> list[Row]:
    groups = 20 if quick else 100
    once = one_run(groups, copies=1)
    twice = one_run(groups, copies=2)
    return rows_of(groups, once, twice)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 groups instead of 100")
    for row in run(parser.parse_args().quick):
        print(row)
