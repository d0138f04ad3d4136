"""Ingest throughput on PostgreSQL: new alert states POSTed to alertpilot on a real
PostgreSQL (Debian's server, started on loopback in a temporary directory with fsync on,
as the tests start it), beside the same load on SQLite and on the bare aiohttp handler,
at concurrency 16 and 64; and the ack latency on PostgreSQL under an open-loop load of
200 requests/s (``ack_latency.py``'s load: new alerts over 500 groups).

Every round goes to a fresh alertpilot with an empty store (a new database, or a new
SQLite file), killed when its round ends, as in ``ingest.py``; a PostgreSQL round's
database is then dropped and the server checkpointed (``forget``). The three alternate,
``ROUNDS`` times each. The throughputs are the medians, and the ratio is the median of
each round's ratio to the bare handler's round before it, as in ``ingest.py``: on a
shared machine either one drifts from one minute to the next, and a round's ratio pairs
two measurements taken seconds apart. The ack waits for PostgreSQL's synchronous commit,
so this measures the durable ack path on PostgreSQL.
"""

from __future__ import annotations

import functools
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
ROUNDS = 5
_ROUNDS = itertools.count(1)


def pg_store(server: PgServer, name: str | None = None) -> dict[str, Any]:
    name = name or server.create_database()
    return {"url": server.url(name), "pool_size": 20}


def forget(server: PgServer, name: str) -> None:
    """Drop a round's database and checkpoint, as ``ingest.py`` deletes a round's SQLite
    files and syncs the disk: otherwise the rows a round wrote are vacuumed (PostgreSQL
    vacuums a table after 1,000 inserts), written back and checkpointed during the
    rounds after it, on the cores and the disk those rounds measure."""
    server.drop_database(name)
    with server.admin() as conn:
        conn.execute("CHECKPOINT")


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
                name = pg.create_database()
                pgs.append(
                    fresh_new_states(
                        Path(tmp),
                        f"pg-{n}",
                        connections,
                        seconds,
                        store=pg_store(pg, name),
                        forget=functools.partial(forget, pg, name),
                    )
                )
                sqlites.append(fresh_new_states(Path(tmp), f"sqlite-{n}", connections, seconds))
            base_rate, pg_rate = statistics.median(bases), statistics.median(pgs)
            ratios = [p / b for p, b in zip(pgs, bases, strict=True)]
            ratio = statistics.median(ratios)
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
                    "note": f"median of {ROUNDS} alternating {seconds} s rounds; ratios per"
                    " round " + ", ".join(f"{r:.2f}" for r in ratios),
                }
            )
    return rows


if __name__ == "__main__":
    for result in run("--quick" in sys.argv[1:]):
        print(result)
