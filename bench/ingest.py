"""Ingest throughput: POST /alertmanager (durable commit before the ack) against a bare
aiohttp handler that parses the same JSON, with the same load tool and concurrency."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from common import alertpilot, baseline, payload_bytes, wrk

GOAL = 0.65


def run(quick: bool = False, seconds: int | None = None) -> list[dict[str, Any]]:
    """``seconds`` of wrk per measurement: 10, or 3 with ``quick``."""
    seconds = seconds or (3 if quick else 10)
    body = payload_bytes()
    rows = []
    for connections in (16, 64):
        with tempfile.TemporaryDirectory() as tmp, baseline(Path(tmp)) as (url, _):
            wrk(f"{url}/alertmanager", body, connections=connections, seconds=2)  # warm up
            base = wrk(f"{url}/alertmanager", body, connections=connections, seconds=seconds)
        with tempfile.TemporaryDirectory() as tmp, alertpilot(Path(tmp)) as (url, _):
            wrk(f"{url}/alertmanager", body, connections=connections, seconds=2)
            ours = wrk(f"{url}/alertmanager", body, connections=connections, seconds=seconds)
        ratio = ours / base
        rows.append(
            {
                "benchmark": f"ingest throughput, concurrency {connections}",
                "measured": f"{ours:,.0f} req/s",
                "baseline": f"{base:,.0f} req/s (bare aiohttp handler)",
                "ratio": f"{ratio:.2f}",
                "goal": f">= {GOAL}",
                "met": ratio >= GOAL,
            }
        )
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]  # [--quick] or [SECONDS]
    quick = "--quick" in args
    numbers = [int(a) for a in args if a.isdigit()]
    for row in run(quick, numbers[0] if numbers else None):
        print(row)
