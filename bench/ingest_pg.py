"""Ingest throughput on PostgreSQL: new alert states POSTed to alertpilot on a real
PostgreSQL (Debian's server, started on loopback in a temporary directory with fsync on,
as the tests start it), beside the same load on SQLite and on the bare aiohttp handler,
at concurrency 16 and 64; and the ack latency on PostgreSQL under an open-loop load of
200 requests/s (``ack_latency.py``'s load: new alerts over 500 groups).

Every round goes to a fresh alertpilot with an empty store (a new database, or a new
SQLite file), killed when its round ends, as in ``ingest.py``; the three alternate,
``ROUNDS`` times each, and the figures are the medians. The ack waits for PostgreSQL's
synchronous commit, so this measures the durable ack path on PostgreSQL.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from ack_latency import RATE
from ack_latency import measure as ack_latency
from common import ROOT, alertpilot, baseline, wrk_script
from ingest import fresh_new_states, new_states_script

sys.path.insert(0, str(ROOT / "tests"))
from pgkit import PgServer, pg_server

GOAL = 0.5
P99_GOAL_MS = 10.0
ROUNDS = 3
_ROUNDS = itertools.count(1)


def pg_store(server: PgServer) -> dict[str, Any]:
    name = server.create_database()
    return {"url": server.url(name), "pool_size": 20}


def run(quick: bool = False) -> list[dict[str, Any]]:
    seconds = 2 if quick else 4
    rows = []
    with tempfile.TemporaryDirectory() as tmp, pg_server() as pg, baseline(Path(tmp)) as (base, _):
        base_target = f"{base}/alertmanager"
        # First, on a quiet server: the throughput rounds leave it checkpointing their
        # writes for a while, which is not what 200 requests/s does.
        (Path(tmp) / "latency").mkdir()
        with alertpilot(Path(tmp) / "latency", store=pg_store(pg)) as (url, _):
            latency = ack_latency(url, 3.0 if quick else 10.0)
        rows.append(
            {
                "benchmark": f"ack latency on PostgreSQL, open loop at {RATE} requests/s",
                "measured": f"p99 {latency['p99']:.1f} ms (p50 {latency['p50']:.1f} ms,"
                f" max {latency['max']:.1f} ms)",
                "baseline": "",
                "ratio": f"{latency['p99'] / P99_GOAL_MS:.2f} of goal",
                "goal": f"p99 <= {P99_GOAL_MS:.0f} ms",
                "met": latency["p99"] <= P99_GOAL_MS,
            }
        )
        for connections in (16, 64):
            bases, pgs, sqlites = [], [], []
            for _ in range(ROUNDS):
                script = new_states_script(Path(tmp))
                bases.append(
                    wrk_script(base_target, script, connections=connections, seconds=seconds)
                )
                n = next(_ROUNDS)
                store = pg_store(pg)
                pgs.append(
                    fresh_new_states(Path(tmp), f"pg-{n}", connections, seconds, store=store)
                )
                sqlites.append(fresh_new_states(Path(tmp), f"sqlite-{n}", connections, seconds))
            base_rate, pg_rate = statistics.median(bases), statistics.median(pgs)
            ratio = pg_rate / base_rate
            rows.append(
                {
                    "benchmark": "ingest on PostgreSQL, new alert states,"
                    f" concurrency {connections}",
                    "measured": f"{pg_rate:,.0f} req/s",
                    "baseline": f"{base_rate:,.0f} req/s (bare aiohttp handler, same Lua"
                    f" script); SQLite {statistics.median(sqlites):,.0f} req/s",
                    "ratio": f"{ratio:.2f}",
                    "goal": f">= {GOAL}",
                    "met": ratio >= GOAL,
                    "note": f"median of {ROUNDS} alternating {seconds} s rounds",
                }
            )
    return rows


if __name__ == "__main__":
    for result in run("--quick" in sys.argv[1:]):
        print(result)
