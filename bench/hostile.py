"""The ack path while someone attacks the server, against the same path on a quiet one.

Each condition runs the open-loop load of the ack-latency benchmark (200 new-state
requests a second) for ``seconds``, with ``GET /healthz`` polled every 20 ms on a
connection of its own, on a fresh alertpilot whose process may open 1,024 files (as on a
default Debian login):

- quiet: nothing else;
- slow connections: 1,100 connections that send half a request's headers and never the
  rest are opened first, and 200 more every second while the load runs (a slowloris
  attack, which needs no credentials);
- huge label: every 0.5 s an alert group of its own whose alert has a 1 MB label value
  (a new incident each time: parsed, stored, matched, rendered and narrated).

Goals (security issue: "an alert must not freeze the server"): the ack p99 under each
attack within 50 ms of the quiet one, and ``/healthz`` answering within 100 ms
throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.client
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from ack_latency import RATE, open_loop, percentile
from common import PAYLOAD, Alertpilot

P99_GOAL_MS = 50.0  # more than quiet
HEALTHZ_GOAL_MS = 100.0
OPEN_FILES = (1024, 1024)
SLOW = 1100
SLOW_PER_SECOND = 200
HUGE = 1 << 20
PARTIAL = b"POST /alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@contextlib.contextmanager
def healthz_poller(url: str) -> Iterator[list[float]]:
    """Latencies of ``GET /healthz`` every 20 ms, on one keep-alive connection (a new
    one if the server closes it), from a thread of its own."""
    latencies: list[float] = []
    stop = threading.Event()
    host, port = url.removeprefix("http://").split(":")

    def poll() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                continue
            latencies.append(time.perf_counter() - started)
            stop.wait(0.02)
        conn.close()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join()


async def slowloris(port: int, stop: asyncio.Event) -> int:
    """Open ``SLOW`` half-sent requests, then ``SLOW_PER_SECOND`` more a second until
    ``stop``; how many were opened."""
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(PARTIAL)
            writers.append(writer)

    for _ in range(SLOW):
        await one()
    while not stop.is_set():
        for _ in range(SLOW_PER_SECOND // 10):
            await one()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    for writer in writers:
        writer.close()
    return len(writers)


def huge_group(n: int) -> bytes:
    body = json.loads(PAYLOAD.read_text())
    body = copy.deepcopy(body)
    service = f"huge-{n}"
    body["groupKey"] = f'{{}}:{{alertname="HighErrorRate", service="{service}"}}'
    body["groupLabels"]["service"] = service
    body["alerts"] = body["alerts"][:1]
    alert = body["alerts"][0]
    alert["labels"]["service"] = service
    alert["labels"]["note"] = "x@example.com " * (HUGE // 14)  # what the redactor scans
    alert["fingerprint"] = f"{0x70000000 + n:016x}"
    return json.dumps(body).encode()


async def huge_labels(url: str, stop: asyncio.Event) -> int:
    sent = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            headers = {"Content-Type": "application/json"}
            async with session.post(
                f"{url}/alertmanager", data=huge_group(sent), headers=headers
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"huge label: HTTP {resp.status}")
            sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    return sent


async def under(server: Alertpilot, attack: str, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    attacker: asyncio.Task[int] | None = None
    if attack == "slow":
        attacker = asyncio.create_task(slowloris(server.port, stop))
        await asyncio.sleep(1.0)  # the first 1,100 are in
    elif attack == "huge":
        attacker = asyncio.create_task(huge_labels(server.url, stop))
        await asyncio.sleep(1.0)
    with healthz_poller(server.url) as health:
        latencies = await open_loop(server.url, seconds, prefix=f"{attack}-load")
    stop.set()
    sent = await attacker if attacker is not None else 0
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "healthz_max": max(health) * 1000 if health else float("inf"),
        "healthz_polls": len(health),
        "attack_sent": sent,
    }


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, OPEN_FILES)


def measure(attack: str, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Alertpilot(Path(tmp))
        server.start(preexec=limited)
        try:
            asyncio.run(open_loop(server.url, 2.0, "warm-up", 0x10000000))
            return asyncio.run(under(server, attack, seconds))
        finally:
            server.stop()


def run(quick: bool = False, seconds: float | None = None) -> list[dict[str, Any]]:
    """``seconds`` of load per condition: 10, or 3 with ``quick``."""
    seconds = seconds or (3.0 if quick else 10.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SLOW:  # this process holds the slow connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * SLOW), hard))
    quiet = measure("quiet", seconds)
    rows = []
    for attack, what in (
        ("slow", f"{SLOW:,} slow connections (+{SLOW_PER_SECOND}/s)"),
        ("huge", "a 1 MB label value every 0.5 s"),
    ):
        got = measure(attack, seconds)
        extra = got["p99"] - quiet["p99"]
        rows.append(
            {
                "benchmark": f"ack latency p99 under attack: {what}",
                "measured": f"{got['p99']:.2f} ms (p50 {got['p50']:.2f} ms), "
                f"+{extra:.2f} ms over quiet",
                "baseline": f"{quiet['p99']:.2f} ms quiet (p50 {quiet['p50']:.2f} ms)",
                "ratio": f"{extra / P99_GOAL_MS:.2f} of goal",
                "goal": f"<= +{P99_GOAL_MS:.0f} ms",
                "met": extra <= P99_GOAL_MS,
                "note": f"{RATE} req/s open loop for {seconds:g} s; attack requests sent: "
                f"{got['attack_sent']:,}; server limited to {OPEN_FILES[0]:,} open files",
            }
        )
        rows.append(
            {
                "benchmark": f"/healthz max latency under attack: {what}",
                "measured": f"{got['healthz_max']:.1f} ms",
                "baseline": f"{quiet['healthz_max']:.1f} ms quiet",
                "ratio": f"{got['healthz_max'] / HEALTHZ_GOAL_MS:.2f} of goal",
                "goal": f"<= {HEALTHZ_GOAL_MS:.0f} ms",
                "met": got["healthz_max"] <= HEALTHZ_GOAL_MS,
                "note": f"polled every 20 ms: {got['healthz_polls']:,} answers",
            }
        )
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]  # [--quick] or [SECONDS]
    quick = "--quick" in args
    numbers = [float(a) for a in args if a.replace(".", "", 1).isdigit()]
    for row in run(quick, numbers[0] if numbers else None):
        print(row)
