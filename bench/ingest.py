"""Ingest throughput: POST /alertmanager (durable commit before the ack) against a bare
aiohttp handler that parses the same JSON, with the same load tool and concurrency.

Both servers run side by side and wrk alternates between them, ``ROUNDS`` times each;
the figures are the medians. On a shared two-core machine the throughput of either
server drifts by 10-20% from one minute to the next, so one long measurement of each
would mostly measure when it ran.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import alertpilot, baseline, payload_bytes, wrk

GOAL = 0.65
ROUNDS = 5


def run(quick: bool = False, seconds: int | None = None) -> list[dict[str, Any]]:
    """``seconds`` of wrk per round and server: 4, or 2 with ``quick``."""
    seconds = seconds or (2 if quick else 4)
    body = payload_bytes()
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        baseline(Path(tmp)) as (base_url, _),
        alertpilot(Path(tmp)) as (url, _),
    ):
        for connections in (16, 64):
            for target in (base_url, url):  # warm up
                wrk(f"{target}/alertmanager", body, connections=connections, seconds=2)
            bases, ours = [], []
            for _ in range(ROUNDS):
                bases.append(
                    wrk(f"{base_url}/alertmanager", body, connections=connections, seconds=seconds)
                )
                ours.append(
                    wrk(f"{url}/alertmanager", body, connections=connections, seconds=seconds)
                )
            base, mine = statistics.median(bases), statistics.median(ours)
            ratio = statistics.median(o / b for o, b in zip(ours, bases, strict=True))
            rows.append(
                {
                    "benchmark": f"ingest throughput, concurrency {connections}",
                    "measured": f"{mine:,.0f} req/s",
                    "baseline": f"{base:,.0f} req/s (bare aiohttp handler)",
                    "ratio": f"{ratio:.2f}",
                    "goal": f">= {GOAL}",
                    "met": ratio >= GOAL,
                    "note": (
                        f"median of {ROUNDS} alternating {seconds} s rounds; ratios per round "
                        + ", ".join(f"{o / b:.2f}" for o, b in zip(ours, bases, strict=True))
                    ),
                }
            )
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]  # [--quick] or [SECONDS]
    quick = "--quick" in args
    numbers = [int(a) for a in args if a.isdigit()]
    for row in run(quick, numbers[0] if numbers else None):
        print(row)
