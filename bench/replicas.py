"""Replicas: alertpilot on PostgreSQL, two replicas behind a real Alertmanager HA pair.

Everything is real but Slack, PagerDuty and the LLM (the loopback fakes): Debian's
PostgreSQL (started by ``tests/pgkit.py`` in a temporary directory), two ``alertpilot
serve`` processes on one database, and two ``prometheus-alertmanager`` processes
gossiping as an HA pair. Each Alertmanager has both replicas as webhooks, and its
``--cluster.peer-timeout`` is 0 s: the second member does not wait to see the first
one's notification, so both send every group, to both replicas (four deliveries of
each notification), as a pair whose gossip is slow or cut does.

1. **Storm with crashes.** 1,000 alerts in 50 groups (severity critical: P0, paged at
   once), 50 new alerts a second (one per group), each posted to both Alertmanagers as
   Prometheus does. Meanwhile replica A is SIGKILLed after a random 1-4 s and started
   again, 5 times. Then Alertmanager's retries and the queues are let run out. Counted
   from the database and the fakes: alerts missing from the store, groups with more
   than one incident, incidents with more than one message of their own in Slack,
   dedup keys with more than one PagerDuty trigger (goal 0 each).
2. **Jobs of a dead replica.** Replica A alone takes 10 P0 groups while PagerDuty's
   Events API holds every request unanswered: A has claimed page jobs (as many as its
   notify lane runs at once) and waits on them when it is SIGKILLed. Replica B starts;
   its pages are answered. Measured: from the kill to the trigger of each page A was
   sending, sent by B once A's leases (``store.lease``, 20 s here) ran out (goal 30 s).

    .venv/bin/python bench/replicas.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from common import Alertpilot, Json, Row, settle, wait_until
from crash import P0_CONFIG, PD_FAST, dedup_key
from fakes_runner import Fakes, running_fakes

from bot.core.alerts import label_fingerprint
from pgkit import PgServer, pg_server
from stack import Alertmanager, free_port

GROUPS = 50
PER_GROUP = 20  # alerts per group: 1,000 in all
KILLS = 5
LEASE = 20.0
HELD_GROUPS = 10
TAKEOVER_GOAL = 30.0


class PgStoreView:
    """Read-only queries on alertpilot's PostgreSQL database (the ``StoreView`` of SQLite)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return list(conn.execute(sql, args).fetchall())

    def incidents(self) -> list[Json]:
        rows = self._query("SELECT id, key, group_hash, data FROM incidents")
        return [
            {"id": r[0], "key": r[1], "group_hash": r[2], "data": json.loads(r[3])} for r in rows
        ]

    def fingerprints(self) -> set[str]:
        return {str(r[0]) for r in self._query("SELECT fingerprint FROM alerts")}

    def inbox_pending(self) -> int:
        [(count,)] = self._query("SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL")
        return int(count)

    def jobs_due(self, within: float = 5.0) -> int:
        """Jobs pending or running that are due within ``within`` seconds."""
        [(count,)] = self._query(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running') AND due_at <= %s",
            time.time() + within,
        )
        return int(count)


def alert(group: int, n: int) -> Json:
    return {
        "labels": {
            "alertname": "HighErrorRate",
            "service": f"replica-{group}",
            "severity": "critical",
            "instance": f"10.0.{group}.{n}:8080",
        },
        "annotations": {"summary": f"5xx ratio above 5% on replica-{group}"},
    }


def replica(tmp: Path, name: str, fakes: Fakes, url: str) -> Alertpilot:
    directory = tmp / name
    directory.mkdir()
    return Alertpilot(
        directory,
        **fakes.sections(channel_rate=50.0, pagerduty=PD_FAST),
        **P0_CONFIG,
        store={"url": url, "lease": LEASE},
    )


@contextmanager
def replicas(tmp: Path, fakes: Fakes, url: str, names: str = "ab") -> Iterator[list[Alertpilot]]:
    servers = [replica(tmp, name, fakes, url) for name in names]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


async def storm(ams: list[Alertmanager], waves: int) -> set[str]:
    """One new alert per group each second, to both Alertmanagers; the fingerprints sent."""
    sent: set[str] = set()
    start = time.monotonic()
    for n in range(waves):
        batch = [alert(group, n) for group in range(GROUPS)]
        await asyncio.gather(*(am.post_alerts(batch) for am in ams))
        sent.update(label_fingerprint(a["labels"]) for a in batch)
        await asyncio.sleep(max(0.0, start + n + 1 - time.monotonic()))
    return sent


async def crash_loop(server: Alertpilot, kills: int, rng: random.Random) -> list[float]:
    restarts = []
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        server.kill()
        began = time.monotonic()
        await asyncio.to_thread(server.start)
        restarts.append(time.monotonic() - began)
    return restarts


async def storm_with_crashes(tmp: Path, pg: PgServer, fakes: Fakes, kills: int) -> Row:
    url = pg.url(pg.create_database())
    view = PgStoreView(url)
    with replicas(tmp, fakes, url) as (a, b):
        a.start()
        b.start()
        ports = [free_port(), free_port()]
        ams = [
            Alertmanager(
                tmp,
                [f"{a.url}/alertmanager", f"{b.url}/alertmanager"],
                group_wait="0s",
                group_interval="1s",
                cluster_port=port,
                peers=[p for p in ports if p != port],
                peer_timeout="0s",
            )
            for port in ports
        ]
        for am in ams:
            await am.start()
        try:
            rng = random.Random(19)
            sending = asyncio.create_task(storm(ams, PER_GROUP))
            restarts = await crash_loop(a, kills, rng)
            sent = await sending
            # Alertmanager retries a delivery that failed while A was down; every firing
            # alert is in each later notification of its group too.
            settled = await asyncio.to_thread(settle, view, timeout=180.0, quiet=5)
        finally:
            for am in ams:
                await am.stop()
    incidents = view.incidents()
    per_group = Counter(i["group_hash"] for i in incidents)
    posts = fakes.own_posts()
    triggers = fakes.pd_triggers()
    return {
        "kills": kills,
        "restart_s": sum(restarts) / max(1, len(restarts)),
        "sent": len(sent),
        "missing": len(sent - view.fingerprints()),
        "incidents": len(incidents),
        "doubled": sum(1 for n in per_group.values() if n > 1),
        "dup_posts": sum(1 for p in posts.values() if len(p) > 1),
        "unposted": sum(1 for i in incidents if i["id"] not in posts),
        "dup_triggers": sum(1 for n in triggers.values() if n > 1),
        "unpaged": sum(1 for i in incidents if triggers.get(dedup_key(i), 0) == 0),
        "settled": settled,
    }


async def jobs_of_a_dead_replica(tmp: Path, pg: PgServer, fakes: Fakes) -> Row:
    url = pg.url(pg.create_database())
    view = PgStoreView(url)
    with replicas(tmp, fakes, url) as (a, b):
        fakes.pagerduty_hold(True)
        a.start()
        async with Alertmanager(tmp, f"{a.url}/alertmanager", group_wait="0s") as am:
            await am.post_alerts([alert(100 + g, 0) for g in range(HELD_GROUPS)])
            held = await asyncio.to_thread(holding_pages, fakes)
            a.kill()
            killed = time.monotonic()
            fakes.pagerduty_hold(False)  # what the dead replica sent is dropped, unanswered
            b.start()
            paged = await asyncio.to_thread(
                wait_until,
                lambda: len(fakes.pd_triggers()) >= HELD_GROUPS,
                timeout=LEASE + 60.0,
                interval=0.1,
            )
        first: dict[str, float] = {}
        for at, event in fakes.pd_trigger_arrivals():
            first.setdefault(str(event.get("dedup_key")), at - killed)
        await asyncio.to_thread(settle, view, timeout=60.0, quiet=5)
    triggers = fakes.pd_triggers()
    taken_over = sorted(first[key] for key in held if key in first)
    return {
        "held": len(held),
        "paged": paged,
        "groups": HELD_GROUPS,
        "triggered": len(first),
        "taken_over": len(taken_over),
        "first_s": taken_over[0] if taken_over else float("nan"),
        "last_s": taken_over[-1] if taken_over else float("nan"),
        "dup_triggers": sum(1 for n in triggers.values() if n > 1),
    }


def holding_pages(fakes: Fakes) -> set[str]:
    """Once replica A is waiting on as many pages as its notify lane runs at a time (their
    number stays the same for a second): the dedup keys of those pages."""
    held: set[str] = set()
    steady_since = time.monotonic()
    deadline = time.monotonic() + 8.0  # well within the Events API timeout
    while time.monotonic() < deadline:
        now = fakes.pagerduty_held()
        if now != held:
            held, steady_since = now, time.monotonic()
        elif held and time.monotonic() - steady_since >= 1.0:
            break
        time.sleep(0.05)
    return held


def storm_rows(m: Row) -> list[Row]:
    title = (
        f"replicas on PostgreSQL behind an Alertmanager HA pair, {m['sent']:,} alerts in "
        f"{GROUPS} groups, replica A SIGKILLed {m['kills']} times"
    )
    unsettled = "" if m["settled"] else "; work still due when the wait ended"
    return [
        {
            "benchmark": f"{title}: alerts missing",
            "measured": f"{m['missing']} of {m['sent']}{unsettled}",
            "baseline": f"{m['sent']} sent to both Alertmanagers",
            "ratio": f"{m['missing'] / max(1, m['sent']):.3f}",
            "goal": "0",
            "met": m["missing"] == 0,
        },
        {
            "benchmark": f"{title}: incidents doubled",
            "measured": f"{m['doubled']} groups with two incidents ({m['incidents']} incidents)",
            "baseline": f"{GROUPS} groups",
            "ratio": f"{m['doubled'] / GROUPS:.3f}",
            "goal": "0",
            "met": m["doubled"] == 0 and m["incidents"] == GROUPS,
        },
        {
            "benchmark": f"{title}: duplicate Slack posts",
            "measured": f"{m['dup_posts']} incidents posted twice, {m['unposted']} never posted",
            "baseline": f"{m['incidents']} incidents, one message each",
            "ratio": f"{m['dup_posts'] / max(1, m['incidents']):.3f}",
            "goal": "0",
            "met": m["dup_posts"] == 0 and m["unposted"] == 0,
        },
        {
            "benchmark": f"{title}: duplicate PagerDuty triggers",
            "measured": f"{m['dup_triggers']} dedup keys triggered twice, "
            f"{m['unpaged']} never paged (restart {m['restart_s']:.1f} s on average)",
            "baseline": f"{m['incidents']} P0 incidents, one trigger each",
            "ratio": f"{m['dup_triggers'] / max(1, m['incidents']):.3f}",
            "goal": "0",
            "met": m["dup_triggers"] == 0 and m["unpaged"] == 0,
        },
    ]


def takeover_row(m: Row) -> Row:
    return {
        "benchmark": f"replica SIGKILLed while sending {m['held']} pages (claimed jobs): "
        "the other replica sends them",
        "measured": f"last of them {m['last_s']:.1f} s after the kill (first {m['first_s']:.1f}"
        f" s); {m['triggered']} of {m['groups']} groups paged, {m['dup_triggers']} twice",
        "baseline": f"store.lease {LEASE:.0f} s",
        "ratio": f"{m['last_s'] / LEASE:.2f} of the lease",
        "goal": f"<= {TAKEOVER_GOAL:.0f} s",
        "met": m["held"] > 0
        and m["taken_over"] == m["held"]
        and m["triggered"] == m["groups"]
        and m["dup_triggers"] == 0
        and m["last_s"] <= TAKEOVER_GOAL,
    }


def run(quick: bool = False) -> list[Row]:
    kills = 2 if quick else KILLS
    with pg_server() as pg:
        with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, running_fakes() as fakes:
            crashed = asyncio.run(storm_with_crashes(Path(tmp), pg, fakes, kills))
        with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, running_fakes() as fakes:
            takeover = asyncio.run(jobs_of_a_dead_replica(Path(tmp), pg, fakes))
    return [*storm_rows(crashed), takeover_row(takeover)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 SIGKILLs instead of 5")
    for row in run(parser.parse_args().quick):
        print(row)
