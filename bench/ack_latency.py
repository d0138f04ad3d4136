"""Ack latency of POST /alertmanager under an open-loop load of 200 requests/s.

Latency is measured from each request's scheduled send time (no coordinated omission),
after 2 s of the same load that is not counted (warm-up), by ``openloop``: a client
that adds little of its own (its floor is measured too: the bare aiohttp handler of the
ingest benchmark, under the same load, is the baseline).
Run twice: with every dependency absent, and with Slack, PagerDuty, the LLM and
Prometheus all hanging (they accept connections and never answer).
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import openloop
from common import PAYLOAD, alertpilot, baseline
from hang import hanging_server

RATE = 200
P99_GOAL_MS = 5.0
MAX_GOAL_MS = 1000.0


def bodies(count: int, prefix: str = "svc", first: int = 0) -> list[bytes]:
    """Payloads over 500 groups (``prefix``-0 to -499): each first opens an incident, the
    rest update one with new alerts, so every payload exercises the pipeline."""
    base = json.loads(PAYLOAD.read_text())
    out = []
    for i in range(count):
        body = copy.deepcopy(base)
        service = f"{prefix}-{i % 500}"
        body["groupKey"] = f'{{}}:{{alertname="HighErrorRate", service="{service}"}}'
        body["groupLabels"]["service"] = service
        for alert in body["alerts"]:
            alert["labels"]["service"] = service
            alert["fingerprint"] = f"{first + i:08x}{alert['fingerprint'][8:]}"
        out.append(json.dumps(body).encode())
    return out


async def open_loop(url: str, seconds: float, prefix: str = "svc", first: int = 0) -> list[float]:
    payloads = bodies(int(RATE * seconds), prefix, first)
    return await openloop.open_loop(url, "/alertmanager", payloads, RATE)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(url: str, seconds: float, warm_up: float = 2.0) -> dict[str, float]:
    """Latencies of ``seconds`` of load, after ``warm_up`` seconds of the same load whose
    latencies are not counted (first-use work: templates compiled, connections opened)."""
    if warm_up:
        asyncio.run(open_loop(url, warm_up, "warm-up", 0x10000000))  # alerts of its own
    latencies = asyncio.run(open_loop(url, seconds))
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": max(latencies) * 1000,
    }


def hanging_config(hang: str) -> dict[str, Any]:
    return {
        "prometheus": {"url": hang, "timeout": 30},
        "alertmanager": {"url": hang, "timeout": 30},
        "llm": {"provider": "openai", "base_url": f"{hang}/v1", "api_key": "sk-bench"},
        "slack": {
            "bot_token": "xoxb-bench",
            "signing_secret": "bench-secret",
            "api_url": f"{hang}/api/",
            "default_channel": "C0BENCH",
        },
        "pagerduty": {"routing_key": "R" * 32, "events_url": f"{hang}/v2/enqueue", "api_url": hang},
    }


def run(quick: bool = False, seconds: float | None = None) -> list[dict[str, Any]]:
    """``seconds`` of load per measurement: 10, or 3 with ``quick``."""
    seconds = seconds or (3.0 if quick else 10.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, baseline(Path(tmp)) as (url, _):
        bare = measure(url, seconds)
    with tempfile.TemporaryDirectory() as tmp, alertpilot(Path(tmp)) as (url, _):
        quiet = measure(url, seconds)
    with (
        hanging_server() as hang,
        tempfile.TemporaryDirectory() as tmp,
        alertpilot(Path(tmp), **hanging_config(hang)) as (url, _),
    ):
        hung = measure(url, seconds)
    rows.append(
        {
            "benchmark": f"ack latency p99, {RATE} req/s open loop",
            "measured": f"{quiet['p99']:.2f} ms (p50 {quiet['p50']:.2f} ms)",
            "baseline": f"{bare['p99']:.2f} ms (p50 {bare['p50']:.2f} ms), bare aiohttp handler",
            "ratio": f"{quiet['p99'] / P99_GOAL_MS:.2f} of goal",
            "goal": f"<= {P99_GOAL_MS} ms",
            "met": quiet["p99"] <= P99_GOAL_MS,
        }
    )
    rows.append(
        {
            "benchmark": "ack latency max, Slack/PagerDuty/LLM/Prometheus hanging",
            "measured": f"{hung['max']:.1f} ms (p99 {hung['p99']:.2f} ms)",
            "baseline": f"{quiet['max']:.1f} ms with nothing hanging",
            "ratio": f"{hung['max'] / max(quiet['max'], 0.001):.2f}",
            "goal": f"< {MAX_GOAL_MS:.0f} ms",
            "met": hung["max"] < MAX_GOAL_MS,
        }
    )
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]  # [--quick] or [SECONDS]
    quick = "--quick" in args
    numbers = [float(a) for a in args if a.replace(".", "", 1).isdigit()]
    for row in run(quick, numbers[0] if numbers else None):
        print(row)
