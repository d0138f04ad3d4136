"""Backlog: 2,000 new alert groups acknowledged as fast as they can be posted, then the
time until no job is due.

alertpilot runs the shipped playbooks (with the shipped config's ``diagnostics`` and
``remediation`` sections) against a healthy Prometheus without data and an Alertmanager
without alerts (``bench/fake_prometheus.py``: every query is answered at once, with
nothing found); Slack, PagerDuty and the LLM are off (their sections are absent), so
events go to the log notifier and narratives are templates. 2,000 distinct 3-alert groups
(severity ``critical``) are posted to ``POST /alertmanager`` by 32 concurrent clients,
their alertnames taken in turn from five that shipped playbooks match (``ALERTNAMES``),
so every incident gets its playbook's diagnostics, remediation plan and narrative.

From the last ack, the store is polled until the inbox is empty and no job is pending or
running that is due now, and it stays so for 2 s (jobs due later, such as approval
expiries, are timers, not backlog). Measured: the seconds from the last ack to the first
of those calm polls. Goal: <= 60 s. The note has the rate (incidents acknowledged and
fully processed per second, from the first post) and the jobs run, by kind. Bounded:
after 600 s it reports what was still due.

    .venv/bin/python bench/backlog.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
from common import Alertpilot, Json, Row, StoreView, group_payload, post_webhook, shipped_playbooks
from fake_prometheus import answered, fake_prometheus

ALERTNAMES = (
    "HighErrorRate",  # error-rate.yaml: high-error-rate
    "HighLatencyP95",  # latency.yaml
    "RateLimitSurge",  # rate-limits.yaml
    "DBPoolExhausted",  # db-pool.yaml
    "CacheHitRateLow",  # cache.yaml
)
CLIENTS = 32
GOAL = 60.0
TIMEOUT = 600.0
CALM = 2.0  # seconds the store must stay drained
POLL = 0.5


async def post_all(url: str, bodies: list[Json]) -> tuple[float, float, int]:
    """POST every body with ``CLIENTS`` at a time, each until acknowledged (bounded);
    return (first post, last ack, refusals), monotonic."""
    queue: asyncio.Queue[Json] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    last_ack, refused = 0.0, 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:

        async def client() -> None:
            nonlocal last_ack, refused
            while not queue.empty():
                body = queue.get_nowait()
                for _ in range(100):
                    if await post_webhook(session, url, body):
                        last_ack = max(last_ack, time.monotonic())
                        break
                    refused += 1
                    await asyncio.sleep(0.1)

        first = time.monotonic()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return first, last_ack, refused


def drained(view: StoreView) -> bool:
    return view.inbox_pending() == 0 and view.jobs_due(within=0) == 0


def wait_drained(view: StoreView, timeout: float) -> float | None:
    """The monotonic time of the first poll from which the store stayed drained for
    ``CALM`` seconds, or None if that did not happen within ``timeout``."""
    deadline = time.monotonic() + timeout
    calm_since: float | None = None
    while True:
        now = time.monotonic()
        with contextlib.suppress(sqlite3.OperationalError):  # busy for a moment: ask again
            if not drained(view):
                calm_since = None
            elif calm_since is None:
                calm_since = now
            elif now - calm_since >= CALM:
                return calm_since
        if now > deadline:
            return None
        time.sleep(POLL)


def measure(tmp: Path, groups: int, timeout: float) -> Row:
    bodies = [
        group_payload(i, alertname=ALERTNAMES[i % len(ALERTNAMES)], tag="backlog")
        for i in range(groups)
    ]
    with fake_prometheus(tmp) as upstream:
        server = Alertpilot(
            tmp,
            **shipped_playbooks(),
            prometheus={"url": upstream},
            alertmanager={"url": upstream},
        )
        view = StoreView(server.db)
        server.start()
        try:
            first, last_ack, refused = asyncio.run(post_all(server.url, bodies))
            done_at = wait_drained(view, timeout)
            due = view.jobs_by_kind("pending", "running", due_within=0)
            return {
                "groups": groups,
                "posted_in": last_ack - first,
                "drain": None if done_at is None else max(0.0, done_at - last_ack),
                "total": None if done_at is None else done_at - first,
                "refused": refused,
                "incidents": view.incident_count(),
                "inbox_pending": view.inbox_pending(),
                "done": view.jobs_by_kind("done"),
                "failed": view.jobs_by_kind("failed"),
                "due": due,
                "later": {
                    kind: n - due.get(kind, 0)
                    for kind, n in view.jobs_by_kind("pending", "running").items()
                    if n > due.get(kind, 0)
                },
                "queries": answered(upstream),
                "tracebacks": server.tracebacks(),
                "timeout": timeout,
            }
        finally:
            server.kill()  # no drain: its store is thrown away


def rows_of(m: Row) -> list[Row]:
    groups = m["groups"]
    title = f"backlog ({groups:,} new groups acked in {m['posted_in']:.1f} s)"
    ran = ", ".join(f"{kind} {n:,}" for kind, n in m["done"].items())
    queries = m["queries"]
    parts = [
        f"{m['incidents']:,} incidents",
        f"jobs run: {ran}" if ran else "no job run",
        f"Prometheus fake answered {queries['query']:,} queries, "
        f"{queries['query_range']:,} range queries, {queries['alerts']:,} alert lists",
        "timers due later: "
        + (", ".join(f"{kind} {n:,}" for kind, n in m["later"].items()) or "none"),
    ]
    if m["failed"]:
        parts.append(f"failed jobs: {m['failed']}")
    if m["refused"]:
        parts.append(f"{m['refused']} posts refused (retried)")
    if m["tracebacks"]:
        parts.append(f"{m['tracebacks']} tracebacks in the log")
    if m["drain"] is None:
        due = ", ".join(f"{kind} {n:,}" for kind, n in m["due"].items()) or "none"
        measured = f"not drained in {m['timeout']:.0f} s"
        parts.insert(0, f"inbox {m['inbox_pending']:,} pending; jobs due: {due}")
        ratio = "n/a"
    else:
        rate = groups / m["total"] if m["total"] > 0 else float("inf")
        measured = f"{m['drain']:.1f} s after the last ack"
        parts.insert(0, f"{rate:.1f} incidents fully processed per second from the first post")
        ratio = f"{m['drain'] / GOAL:.2f} of goal"
    return [
        {
            "benchmark": f"{title}: until no job is due",
            "measured": measured,
            "baseline": f"{groups:,} groups posted by {CLIENTS} clients in {m['posted_in']:.1f} s",
            "ratio": ratio,
            "goal": f"<= {GOAL:.0f} s",
            "met": m["drain"] is not None and m["drain"] <= GOAL,
            "note": "; ".join(parts),
        }
    ]


def run(quick: bool = False) -> list[Row]:
    groups, timeout = (200, 300.0) if quick else (2000, TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        return rows_of(measure(Path(tmp), groups, timeout))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 groups instead of 2,000")
    for row in run(parser.parse_args().quick):
        print(row)
