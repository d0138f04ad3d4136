"""Two replicas on one PostgreSQL behind an Alertmanager HA pair, one SIGKILLed and
restarted again and again.

1,000 alerts in 50 groups (critical: P0, paged at once): 20 waves, each adding one
alert to every group, each group's notification delivered as an HA pair delivers it,
by each Alertmanager to each replica (four deliveries, each retried until acknowledged,
as Alertmanager retries). Meanwhile replica B is SIGKILLed after a random 0.5-2.5 s and
started again, five times. Then the queues drain, and from the database and the fakes'
recordings: acknowledged alerts missing, incidents (goal: one per group), incidents
posted to Slack more than once, PagerDuty dedup_keys triggered more than once (goal 0).

Then a takeover: replica B alone takes a P0 and is SIGKILLed while it runs its jobs
(the moment the fake Slack takes the incident's message); replica A starts at once, and
the time from the kill until every job B held has run is measured (lease 15 s; goal:
within 30 s).

    .venv/bin/python bench/replicas_pg.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from common import ROOT, Alertpilot, Json, Row, group_payload, post_webhook, wait_until
from crash import P0_CONFIG, PD_FAST
from fakes_runner import running_fakes

sys.path.insert(0, str(ROOT / "tests"))
from pgkit import pg_server

GROUPS, WAVES = 50, 20
WAVE_EVERY = 1.0  # s


def notification(group: int, alerts: int) -> Json:
    """Group ``group``'s notification when it holds ``alerts`` alerts."""
    body = group_payload(group, tag="ha")
    template = body["alerts"][0]
    body["alerts"] = []
    for n in range(alerts):
        alert = copy.deepcopy(template)
        alert["labels"]["instance"] = f"pod-{n}"
        alert["fingerprint"] = f"{group:06x}{n:010x}"
        body["alerts"].append(alert)
    return body


class HaPair:
    """Every notification to both replicas from both Alertmanagers: four deliveries."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.acked: set[str] = set()  # fingerprints of alerts some replica acknowledged
        self.refused = 0

    async def run(self, session: aiohttp.ClientSession, waves: int) -> None:
        tasks = []
        for wave in range(1, waves + 1):
            started = time.monotonic()
            for group in range(GROUPS):
                body = notification(group, wave)
                for url in self.urls * 2:
                    tasks.append(asyncio.create_task(self._deliver(session, url, body)))
            await asyncio.sleep(max(0.0, WAVE_EVERY - (time.monotonic() - started)))
        await asyncio.gather(*tasks)

    async def _deliver(self, session: aiohttp.ClientSession, url: str, body: Json) -> None:
        for _ in range(200):  # about a minute of retries at most
            if await post_webhook(session, url, body):
                self.acked.update(a["fingerprint"] for a in body["alerts"])
                return
            self.refused += 1
            await asyncio.sleep(0.3)


class PgView:
    def __init__(self, url: str) -> None:
        self.url = url

    def one(self, query: str, *args: Any) -> Any:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(query.encode(), args).fetchone()
            return None if row is None else row[0]

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query.encode()).fetchall()

    def quiet(self) -> bool:
        pending = self.one("SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL")
        due = self.one(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running') AND due_at <= %s",
            time.time() + 5,
        )
        return pending == 0 and due == 0


async def kill_loop(server: Alertpilot, kills: int, rng: random.Random) -> None:
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        server.kill()
        await asyncio.to_thread(server.start)


async def measure(url: str, tmp: Path, kills: int, waves: int) -> Row:
    with running_fakes() as fakes:
        sections = {
            **fakes.sections(channel_rate=50.0, pagerduty=PD_FAST),
            **P0_CONFIG,
            "store": {"url": url, "lease": "5s"},
        }
        for name in ("a", "b"):
            (tmp / name).mkdir()
        a, b = (Alertpilot(tmp / name, **sections) for name in ("a", "b"))
        for server in (a, b):
            server.start()
        try:
            pair = HaPair([a.url, b.url])
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
                load = asyncio.create_task(pair.run(session, waves))
                await kill_loop(b, kills, random.Random(7))
                await load
            view = PgView(url)
            settled = await asyncio.to_thread(wait_until, view.quiet, timeout=180, interval=1)
            stored = {str(r[0]) for r in view.rows("SELECT fingerprint FROM alerts")}
            incidents = view.rows("SELECT id, key FROM incidents")
            posts = fakes.own_posts()
            triggers = fakes.pd_triggers()
        finally:
            for server in (a, b):
                server.stop()
    return {
        "kills": kills,
        "acked": len(pair.acked),
        "refused": pair.refused,
        "missing": len(pair.acked - stored),
        "incidents": len(incidents),
        "dup_posts": sum(1 for p in posts.values() if len(p) > 1),
        "unposted": sum(1 for i in incidents if i[0] not in posts),
        "dup_triggers": sum(1 for n in triggers.values() if n > 1),
        "unpaged": sum(1 for i in incidents if triggers.get(i[1], 0) == 0),
        "settled": settled,
    }


TAKEOVER_LEASE = 15.0


async def takeover(url: str, tmp: Path) -> float:
    """Seconds from B's death, holding jobs, until A has run every one of them."""
    with running_fakes() as fakes:
        sections = {
            **fakes.sections(channel_rate=50.0, pagerduty=PD_FAST),
            **P0_CONFIG,
            "store": {"url": url, "lease": f"{TAKEOVER_LEASE:.0f}s"},
        }
        for name in ("ta", "tb"):
            (tmp / name).mkdir()
        a, b = (Alertpilot(tmp / name, **sections) for name in ("ta", "tb"))
        killed_at = 0.0

        def kill_b() -> None:
            nonlocal killed_at
            b.kill()
            killed_at = time.monotonic()

        b.start()
        try:
            fakes.tripwire.arm("slack", kill_b)
            async with aiohttp.ClientSession() as session:
                assert await post_webhook(session, b.url, notification(GROUPS + 1, 1))
            if not await asyncio.to_thread(fakes.tripwire.sprung.wait, 30.0):
                raise RuntimeError("replica B never posted to Slack")
            view = PgView(url)
            held = [r[0] for r in view.rows("SELECT id FROM jobs WHERE status = 'running'")]
            a.start()

            def ran() -> bool:
                return all(
                    view.one("SELECT status FROM jobs WHERE id = %s", job) in ("done", "failed")
                    for job in held
                )

            if not await asyncio.to_thread(wait_until, ran, timeout=120, interval=0.2):
                raise RuntimeError(f"jobs {held} were not taken over")
            return time.monotonic() - killed_at
        finally:
            a.stop()
            b.stop()


def rows_of(m: Row) -> list[Row]:
    title = f"two replicas on PostgreSQL, HA pair, {m['kills']} SIGKILLs of one"
    return [
        {
            "benchmark": f"{title}: acknowledged alerts missing",
            "measured": f"{m['missing']} of {m['acked']} ({m['refused']} deliveries refused)",
            "baseline": f"{m['acked']} acknowledged, each notification to 2 replicas by 2"
            " Alertmanagers",
            "goal": "0",
            "met": m["missing"] == 0,
        },
        {
            "benchmark": f"{title}: incidents",
            "measured": f"{m['incidents']} for {GROUPS} groups",
            "baseline": f"{GROUPS} groups",
            "goal": f"{GROUPS}",
            "met": m["incidents"] == GROUPS,
        },
        {
            "benchmark": f"{title}: duplicate Slack posts",
            "measured": f"{m['dup_posts']} incidents posted twice, {m['unposted']} never posted",
            "goal": "0",
            "met": m["dup_posts"] == 0 and m["unposted"] == 0,
        },
        {
            "benchmark": f"{title}: duplicate PagerDuty triggers",
            "measured": f"{m['dup_triggers']} dedup_keys triggered twice,"
            f" {m['unpaged']} never paged{'' if m['settled'] else ' (not settled)'}",
            "goal": "0",
            "met": m["dup_triggers"] == 0 and m["unpaged"] == 0,
        },
    ]


def takeover_row(seconds: float) -> Row:
    return {
        "benchmark": "a replica SIGKILLed while it runs its jobs: until the other ran them",
        "measured": f"{seconds:.1f} s after the kill",
        "baseline": f"store.lease {TAKEOVER_LEASE:.0f} s",
        "ratio": f"{seconds / 30:.2f} of goal",
        "goal": "<= 30 s",
        "met": seconds <= 30,
    }


def run(quick: bool = False) -> list[Row]:
    waves = 10 if quick else WAVES
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, pg_server() as pg:
        url = pg.url(pg.create_database())
        rows = rows_of(asyncio.run(measure(url, Path(tmp), 5, waves)))
        url = pg.url(pg.create_database())
        return [*rows, takeover_row(asyncio.run(takeover(url, Path(tmp))))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 waves (500 alerts), not 20")
    for row in run(parser.parse_args().quick):
        print(row)
