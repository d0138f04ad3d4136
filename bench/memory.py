"""Memory: RSS of ``alertpilot serve`` after 10,000 incidents, and over a steady soak.

Slack (50 writes per second per channel, incidents routed over 10 channels), PagerDuty
(severity critical mapped to P0: every incident pages at once; 10,000 events a minute)
and the LLM are the loopback fakes in this process. RSS is read from /proc/PID/status:
the server's plus its inbox writer's.

1. baseline: a freshly started server;
2. 10,000 distinct 3-alert groups at 100 per second, then the queues drain (bounded);
   RSS then, and the peak while it worked (goal: at most 200 MB);
3. soak (10 minutes; 30 s with --quick): 2 new groups a second, each resolved 10 s later;
   RSS every few seconds; start, end, max and the least-squares slope in MB per minute
   (goal: flat, at most 1 MB/min).

    .venv/bin/python bench/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from common import Alertpilot, Json, Row, StoreView, group_payload, post_webhook, resolved, settle
from crash import P0_CONFIG, PD_FAST
from fakes_runner import CHANNEL, running_fakes

RSS_GOAL_MB = 200.0
SLOPE_GOAL = 1.0  # MB per minute
FLOOD_RATE = 100.0
SOAK_RATE = 2.0
RESOLVE_AFTER = 10.0
CHANNELS = 10
ROUTES: list[Json] = [
    {"match": [f'service=~".*{d}"'], "channel": f"{CHANNEL}{d}"} for d in range(CHANNELS)
]


class Sampler:
    """RSS of one process every ``interval`` seconds, in a thread (bounded count)."""

    def __init__(self, server: Alertpilot, interval: float, limit: int = 10_000) -> None:
        self.server = server
        self.interval = interval
        self.limit = limit
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        for _ in range(self.limit):
            with contextlib.suppress(OSError, RuntimeError):  # the process is gone
                self.samples.append((time.monotonic(), self.server.rss_mb()))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def peak(self) -> float:
        return max((rss for _, rss in self.samples), default=0.0)


async def post_at_rate(url: str, bodies: list[Json], rate: float, *, in_flight: int = 32) -> int:
    """POST ``bodies`` at ``rate`` per second (at most ``in_flight`` open); return refusals."""
    refused = 0
    gate = asyncio.Semaphore(in_flight)
    async with aiohttp.ClientSession() as session:

        async def send(body: Json) -> None:
            nonlocal refused
            async with gate:
                if not await post_webhook(session, url, body):
                    refused += 1

        tasks = []
        start = time.monotonic()
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(send(body)))
        await asyncio.gather(*tasks)
    return refused


def soak_bodies(seconds: float) -> list[tuple[float, Json]]:
    """(when, payload): new groups at ``SOAK_RATE``, each resolved ``RESOLVE_AFTER`` later."""
    plan = []
    for i in range(int(seconds * SOAK_RATE)):
        at = i / SOAK_RATE
        body = group_payload(i, tag="soak")
        plan.append((at, body))
        if at + RESOLVE_AFTER < seconds:
            plan.append((at + RESOLVE_AFTER, resolved(body)))
    return sorted(plan, key=lambda item: item[0])


async def soak(url: str, seconds: float) -> int:
    refused = 0
    async with aiohttp.ClientSession() as session:
        start = time.monotonic()
        tasks = []

        async def send(body: Json) -> None:
            nonlocal refused
            if not await post_webhook(session, url, body):
                refused += 1

        for at, body in soak_bodies(seconds):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            tasks.append(asyncio.create_task(send(body)))
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        await asyncio.gather(*tasks)
    return refused


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time, MB per minute."""
    if len(samples) < 2:
        return 0.0
    times = [t / 60 for t, _ in samples]
    values = [rss for _, rss in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    var = sum((t - mean_t) ** 2 for t in times)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
    return cov / var if var else 0.0


def measure(tmp: Path, incidents: int, soak_s: float, interval: float) -> Row:
    with running_fakes() as fakes:
        sections: dict[str, Any] = fakes.sections(
            channel_rate=50.0, slack={"routes": ROUTES}, pagerduty=PD_FAST
        )
        server = Alertpilot(tmp, **sections, **P0_CONFIG)
        view = StoreView(server.db)
        server.start()
        try:
            time.sleep(2.0)
            fresh = server.rss_mb()
            began = time.monotonic()
            with Sampler(server, interval) as flood_sampler:
                bodies = [group_payload(i, tag="mem") for i in range(incidents)]
                refused = asyncio.run(post_at_rate(server.url, bodies, FLOOD_RATE))
                del bodies
                drained = settle(view, timeout=max(120.0, incidents / 20), quiet=3)
            flood_s = time.monotonic() - began
            after = server.rss_mb()
            stored = view.incident_count()
            backlog = view.jobs_due(within=5.0)
            with Sampler(server, interval) as soak_sampler:
                refused += asyncio.run(soak(server.url, soak_s))
            samples = soak_sampler.samples
            start = samples[0][0] if samples else 0.0
            series = [(t - start, rss) for t, rss in samples]
            return {
                "incidents": incidents,
                "stored": stored,
                "refused": refused,
                "fresh": fresh,
                "after": after,
                "flood_peak": flood_sampler.peak(),
                "flood_s": flood_s,
                "drained": drained,
                "backlog": backlog,
                "soak_s": soak_s,
                "soak_start": series[0][1] if series else 0.0,
                "soak_end": series[-1][1] if series else 0.0,
                "soak_max": max((r for _, r in series), default=0.0),
                "slope": slope_per_minute(series),
                "samples": len(series),
                "slack_writes": len(fakes.slack_writes()),
                "pd_events": len(fakes.pd_events()),
                "tracebacks": server.tracebacks(),
            }
        finally:
            server.stop()


def rows_of(m: Row) -> list[Row]:
    drained = (
        f"drained in {m['flood_s']:.0f} s"
        if m["drained"]
        else f"{m['backlog']} jobs still due after {m['flood_s']:.0f} s"
    )
    refused = f"; {m['refused']} posts refused" if m["refused"] else ""
    return [
        {
            "benchmark": f"memory: RSS after {m['incidents']:,} incidents",
            "measured": f"{m['after']:.0f} MB (peak {m['flood_peak']:.0f} MB; {m['stored']:,} "
            f"incidents stored, {drained}{refused})",
            "baseline": f"{m['fresh']:.0f} MB freshly started",
            "ratio": f"{m['after'] / m['fresh']:.2f}",
            "goal": f"<= {RSS_GOAL_MB:.0f} MB",
            "met": max(m["after"], m["flood_peak"]) <= RSS_GOAL_MB
            and m["stored"] == m["incidents"],
        },
        {
            "benchmark": f"memory: soak, {m['soak_s'] / 60:.1f} min at {SOAK_RATE:g} new "
            f"incidents/s (each resolved after {RESOLVE_AFTER:g} s)",
            "measured": f"start {m['soak_start']:.0f}, end {m['soak_end']:.0f}, "
            f"max {m['soak_max']:.0f} MB; slope {m['slope']:+.2f} MB/min "
            f"({m['samples']} samples)",
            "baseline": f"{m['after']:.0f} MB after {m['incidents']:,} incidents",
            "ratio": f"{m['soak_end'] / max(1.0, m['soak_start']):.2f}",
            "goal": f"flat: slope <= {SLOPE_GOAL:g} MB/min",
            "met": m["slope"] <= SLOPE_GOAL and m["soak_max"] <= RSS_GOAL_MB,
        },
    ]


def run(quick: bool = False) -> list[Row]:
    incidents, soak_s, interval = (2_000, 30.0, 2.0) if quick else (10_000, 600.0, 5.0)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        m = measure(Path(tmp), incidents, soak_s, interval)
    if m["tracebacks"]:
        print(f"memory: {m['tracebacks']} tracebacks in the server log")
    return rows_of(m)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2,000 incidents and a 30 s soak (instead of 10 min)"
    )
    parser.add_argument("--incidents", type=int, help="override the number of incidents")
    args = parser.parse_args()
    if args.incidents:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            quick_soak = (30.0, 2.0) if args.quick else (600.0, 5.0)
            rows = rows_of(measure(Path(tmp), args.incidents, *quick_soak))
    else:
        rows = run(args.quick)
    for row in rows:
        print(row)
