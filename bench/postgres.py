"""Ingest on PostgreSQL: the ``ingest`` and ``ack_latency`` benchmarks with ``store.url``
on Debian's PostgreSQL (``tests/pgkit.py``: a temporary server on loopback, fsync on,
synchronous commit), beside SQLite's rows in the same report.

- New alert states (every request a new group and fingerprints) against the bare
  aiohttp handler, concurrency 16 and 64: rounds alternate between the two, each of
  alertpilot's on a fresh, empty database, as in ``ingest``. Goal: at least 0.5x.
- Ack latency at 200 requests/s, open loop, as in ``ack_latency``. Goal: p99 <= 10 ms.

    .venv/bin/python bench/postgres.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import ack_latency
import ingest
from common import Alertpilot, Row, baseline, wrk_script

from pgkit import PgServer, pg_server

RATIO_GOAL = 0.5
P99_GOAL_MS = 10.0


def new_states_rows(pg: PgServer, tmp: Path, quick: bool) -> list[Row]:
    seconds, rounds = (2, 2) if quick else (4, ingest.ROUNDS)
    rows = []
    with baseline(tmp) as (base_url, _):
        base_target = f"{base_url}/alertmanager"
        for connections in (16, 64):
            wrk_script(
                base_target, ingest.new_states_script(tmp), connections=connections, seconds=1
            )
            bases, ours = [], []
            for n in range(rounds):
                bases.append(
                    wrk_script(
                        base_target,
                        ingest.new_states_script(tmp),
                        connections=connections,
                        seconds=seconds,
                    )
                )
                store = {"url": pg.url(pg.create_database())}
                ours.append(
                    ingest.fresh_new_states(
                        tmp, f"pg-{connections}-{n}", connections, seconds, store=store
                    )
                )
            ratios = [o / b for o, b in zip(ours, bases, strict=True)]
            ratio = statistics.median(ratios)
            rows.append(
                {
                    "benchmark": "ingest throughput on PostgreSQL, new alert states, "
                    f"concurrency {connections}",
                    "measured": f"{statistics.median(ours):,.0f} req/s",
                    "baseline": f"{statistics.median(bases):,.0f} req/s (bare aiohttp handler,"
                    " same Lua script)",
                    "ratio": f"{ratio:.2f}",
                    "goal": f">= {RATIO_GOAL}",
                    "met": ratio >= RATIO_GOAL,
                    "note": f"median of {rounds} alternating {seconds} s rounds, each on a"
                    " fresh database; ratios per round " + ", ".join(f"{r:.2f}" for r in ratios),
                }
            )
    return rows


def ack_row(pg: PgServer, tmp: Path, quick: bool) -> Row:
    seconds = 3.0 if quick else 10.0
    directory = tmp / "ack"
    directory.mkdir()
    server = Alertpilot(directory, store={"url": pg.url(pg.create_database())})
    server.start()
    try:
        ours = ack_latency.measure(server.url, seconds)
    finally:
        server.stop()
    with baseline(tmp) as (url, _):
        bare = ack_latency.measure(url, seconds)
    return {
        "benchmark": f"ack latency p99 on PostgreSQL, {ack_latency.RATE} req/s open loop",
        "measured": f"{ours['p99']:.2f} ms (p50 {ours['p50']:.2f} ms, max {ours['max']:.1f} ms)",
        "baseline": f"{bare['p99']:.2f} ms (p50 {bare['p50']:.2f} ms), bare aiohttp handler",
        "ratio": f"{ours['p99'] / P99_GOAL_MS:.2f} of goal",
        "goal": f"<= {P99_GOAL_MS:.0f} ms",
        "met": ours["p99"] <= P99_GOAL_MS,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    with pg_server() as pg, tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        return [*new_states_rows(pg, Path(tmp), quick), ack_row(pg, Path(tmp), quick)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s; 3 s of load")
    for row in run(parser.parse_args().quick):
        print(row)
