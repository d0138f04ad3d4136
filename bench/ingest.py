"""Ingest throughput: POST /alertmanager (durable commit before the ack) against a bare
aiohttp handler that parses the same JSON, with the same load tool and concurrency, for
two kinds of load:

- repeat payload: the captured 3-alert body, the same again and again (after the first
  delivery, a repeat of states already applied);
- new alert states: every request a new alert group with new fingerprints, as in a
  flood of new alerts. wrk's Lua ``request()`` builds each body from the captured
  payload, with an id of its own (the wrk run, its thread and a per-request counter) in
  the groupKey, the ``service`` of groupLabels, commonLabels and every alert, and every
  alert's fingerprint. Each request opens an incident, which alertpilot processes while
  it goes on acknowledging. The bare handler gets the same script, so both sides pay the
  same client cost.

Both servers run side by side and wrk alternates between them, ``ROUNDS`` times each;
the figures are the medians. On a shared two-core machine the throughput of either
server drifts by 10-20% from one minute to the next, so one long measurement of each
would mostly measure when it ran. Each new-state round goes to a fresh alertpilot (an
empty store, warmed up for 1 s with the same script) that is killed when its round
ends, its files deleted and the disk synced: the incidents it has acknowledged but not
yet processed, and their writes, would otherwise keep it and the disk busy through the
next rounds, on the cores and the disk the other measurements use.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import PAYLOAD, Alertpilot, alertpilot, baseline, payload_bytes, wrk, wrk_script

GOAL = 0.65
ROUNDS = 5
SETTLE = 1.0  # seconds of quiet after each new-state round
ID = "@ID@"  # where the Lua script puts each request's id
_RUNS = itertools.count(1)  # every wrk run of new states gets ids of its own


def new_states_template() -> str:
    """The captured payload with ``ID`` where each request's own id goes: a group
    ``{alertname="HighErrorRate", service="new-<id>"}`` whose alerts have the
    fingerprints ``<id>0000``, ``<id>0001``, ... (16 hex digits, as Alertmanager's)."""
    body = json.loads(PAYLOAD.read_text())
    service = f"new-{ID}"
    body["groupKey"] = f'{{}}:{{alertname="HighErrorRate", service="{service}"}}'
    body["groupLabels"]["service"] = service
    body["commonLabels"]["service"] = service
    for n, alert in enumerate(body["alerts"]):
        alert["labels"]["service"] = service
        alert["fingerprint"] = f"{ID}{n:04x}"
    return json.dumps(body)


def new_states_script(directory: Path) -> Path:
    """A wrk script that POSTs a new alert group on every request. Its ids are 12 hex
    digits: this run (of 255), the wrk thread (numbered in ``setup``), the request count
    of that thread."""
    run = next(_RUNS)
    if run > 0xFF:
        raise RuntimeError("more wrk runs than distinct run ids")
    pieces = new_states_template().split(ID)
    if any("]==]" in piece for piece in pieces):
        raise RuntimeError("the payload cannot be quoted as a Lua long string")
    literal = ",\n  ".join(f"[==[{piece}]==]" for piece in pieces)
    script = directory / f"new-states-{run}.lua"
    script.write_text(
        f"local pieces = {{\n  {literal}\n}}\n"
        f"local run = {run}\n"
        "local threads = 0\n"
        "local counter = 0\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        "\n"
        "function setup(thread)\n"
        "  threads = threads + 1\n"
        '  thread:set("thread_id", threads)\n'
        "end\n"
        "\n"
        "function request()\n"
        "  counter = counter + 1\n"
        '  local id = string.format("%02x%02x%08x", run, thread_id, counter)\n'
        '  return wrk.format("POST", nil, headers, table.concat(pieces, id))\n'
        "end\n"
    )
    return script


def fresh_new_states(
    tmp: Path,
    name: str,
    connections: int,
    seconds: int,
    *,
    forget: Callable[[], None] | None = None,
    **sections: Any,
) -> float:
    """Requests per second of new states into a fresh alertpilot (an empty store: SQLite
    in its directory unless ``sections`` give a ``store``), killed afterwards; then
    ``forget`` drops a store that is not in its directory."""
    directory = tmp / name
    directory.mkdir()
    server = Alertpilot(directory, **sections)
    server.start()
    try:
        target = f"{server.url}/alertmanager"
        wrk_script(target, new_states_script(tmp), connections=connections, seconds=1)
        return wrk_script(target, new_states_script(tmp), connections=connections, seconds=seconds)
    finally:
        server.kill()  # no drain: what it has not processed yet is thrown away with it
        # Its files go, and the disk is left with no write-back of theirs: the ack path
        # waits on fsync, and the next round would be measured with this one's writes.
        shutil.rmtree(directory, ignore_errors=True)
        if forget is not None:
            forget()
        os.sync()
        time.sleep(SETTLE)


def row(
    load: str, connections: int, ours: list[float], bases: list[float], seconds: int
) -> dict[str, Any]:
    base, mine = statistics.median(bases), statistics.median(ours)
    ratios = [o / b for o, b in zip(ours, bases, strict=True)]
    ratio = statistics.median(ratios)
    same = ", same Lua script" if load == "new alert states" else ""
    return {
        "benchmark": f"ingest throughput, {load}, concurrency {connections}",
        "measured": f"{mine:,.0f} req/s",
        "baseline": f"{base:,.0f} req/s (bare aiohttp handler{same})",
        "ratio": f"{ratio:.2f}",
        "goal": f">= {GOAL}",
        "met": ratio >= GOAL,
        "note": (
            f"median of {ROUNDS} alternating {seconds} s rounds; ratios per round "
            + ", ".join(f"{r:.2f}" for r in ratios)
        ),
    }


def run(quick: bool = False, seconds: int | None = None) -> list[dict[str, Any]]:
    """``seconds`` of wrk per round and server: 4, or 2 with ``quick``."""
    seconds = seconds or (2 if quick else 4)
    body = payload_bytes()
    repeat_rows, new_rows = [], []
    with (
        tempfile.TemporaryDirectory() as tmp,
        baseline(Path(tmp)) as (base_url, _),
        alertpilot(Path(tmp)) as (url, _),
    ):
        base_target, target = f"{base_url}/alertmanager", f"{url}/alertmanager"
        for connections in (16, 64):
            for warm in (base_target, target):
                wrk(warm, body, connections=connections, seconds=2)
            wrk_script(
                base_target, new_states_script(Path(tmp)), connections=connections, seconds=1
            )
            bases, ours, bases_new, ours_new = [], [], [], []
            for n in range(ROUNDS):
                bases.append(wrk(base_target, body, connections=connections, seconds=seconds))
                ours.append(wrk(target, body, connections=connections, seconds=seconds))
                script = new_states_script(Path(tmp))
                bases_new.append(
                    wrk_script(base_target, script, connections=connections, seconds=seconds)
                )
                ours_new.append(
                    fresh_new_states(Path(tmp), f"new-{connections}-{n}", connections, seconds)
                )
            repeat_rows.append(row("repeat payload", connections, ours, bases, seconds))
            new_rows.append(row("new alert states", connections, ours_new, bases_new, seconds))
    return repeat_rows + new_rows


if __name__ == "__main__":
    args = sys.argv[1:]  # [--quick] or [SECONDS]
    quick = "--quick" in args
    numbers = [int(a) for a in args if a.isdigit()]
    for result in run(quick, numbers[0] if numbers else None):
        print(result)
