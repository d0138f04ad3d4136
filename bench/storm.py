"""Alert storm: 1,000 alerts in 50 groups within 10 s, through a real Alertmanager.

Debian's ``prometheus-alertmanager`` (group_by alertname+service, group_wait 1s,
group_interval 10s) gets the alerts on ``/api/v2/alerts``, a group's 20 alerts at once (as
Prometheus sends a rule's firing instances), the groups spread evenly over the 10 s. Its
webhooks reach ``alertpilot serve``, whose Slack, PagerDuty and LLM are the loopback fakes
in this process; Slack keeps its real default pace of 1 write per second per channel.
Everything is measured from the fakes' recordings and the store:

- top-level Slack messages (the storm roll-up included): at most one per group, plus one;
- the pace of writes to the channel: about 1 per second (at most 11 in any 10 s);
- none lost: every alert in the store and every incident in Slack, in its own message
  or listed by the roll-up; all within 90 s of the first alert;
- LLM calls: at most one per incident, or one storm summary.

    .venv/bin/python bench/storm.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import Alertpilot, Row, StoreView, settle, wait_until
from fakes_runner import CHANNEL, Fakes, max_in_window, running_fakes

from stack import Alertmanager

ALERTNAMES = ("HighErrorRate", "HighLatencyP95", "LLMProviderErrors", "RateLimitSurge", "DBPool")
DELIVERY_GOAL = 90.0
PER_10S_GOAL = 11


def storm_alerts(groups: int, per_group: int) -> list[list[dict[str, Any]]]:
    """``groups`` lists of ``per_group`` alerts; a group is one alertname + service."""
    ends = datetime.now(UTC) + timedelta(hours=1)  # no resolve_timeout during the run
    out = []
    for g in range(groups):
        alertname, service = ALERTNAMES[g % len(ALERTNAMES)], f"storm-{g}"
        out.append(
            [
                {
                    "labels": {
                        "alertname": alertname,
                        "service": service,
                        "instance": f"{service}-pod-{k:02d}",
                        "namespace": "prod",
                        "severity": "critical",
                    },
                    "annotations": {"summary": f"{alertname} on {service} (pod {k})"},
                    "endsAt": ends,
                    "generatorURL": "http://prometheus.example.com:9090/graph",
                }
                for k in range(per_group)
            ]
        )
    return out


async def post_storm(am: Alertmanager, batches: list[list[dict[str, Any]]], spread: float) -> float:
    """Post each group's alerts at its moment within ``spread`` seconds; return the start."""
    start = time.monotonic()
    for i, alerts in enumerate(batches):
        delay = start + i * spread / len(batches) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await am.post_alerts(alerts)
    return start


def own_posted_at(fakes: Fakes) -> dict[int, float]:
    """Incident id -> when its own message was posted."""
    seen: dict[int, float] = {}
    for incident_id, posts in fakes.own_posts().items():
        times = [p.posted_at for p in posts if p.posted_at is not None]
        if times:
            seen[incident_id] = min(times)
    return seen


def delivered_at(fakes: Fakes, view: StoreView) -> dict[int, float]:
    """Incident id -> when it first showed in Slack: its own message or a roll-up listing."""
    seen = own_posted_at(fakes)
    for write in fakes.slack_writes():
        for incident_id in write.rollup_ids:
            seen[incident_id] = min(seen.get(incident_id, write.at), write.at)
    known = {i["id"] for i in view.incidents()}
    return {i: at for i, at in seen.items() if i in known}


async def measure(fakes: Fakes, tmp: Path, alerts: int, groups: int, spread: float) -> Row:
    per_group = alerts // groups
    batches = storm_alerts(groups, per_group)
    expected = {
        (a["labels"]["alertname"], a["labels"]["service"], a["labels"]["instance"])
        for batch in batches
        for a in batch
    }
    server = Alertpilot(tmp, **fakes.sections(channel_rate=1.0), workers={"poll_interval": 0.2})
    view = StoreView(server.db)
    server.start()
    try:
        async with Alertmanager(
            tmp, f"{server.url}/alertmanager", group_wait="1s", group_interval="10s"
        ) as am:
            start = await post_storm(am, batches, spread)
            posted_in = time.monotonic() - start

            def all_in() -> bool:
                return len(view.alert_labels()) >= len(expected) and len(
                    delivered_at(fakes, view)
                ) >= min(groups, view.incident_count())

            # bounded: 2x the goal, then whatever is missing counts as late or lost
            await asyncio.to_thread(wait_until, all_in, timeout=2 * DELIVERY_GOAL, interval=1.0)
            settled = await asyncio.to_thread(settle, view, timeout=240.0, quiet=5)
        stored = {
            (str(lab.get("alertname")), str(lab.get("service")), str(lab.get("instance")))
            for lab in view.alert_labels()
        }
        incidents = view.incidents()
        seen = delivered_at(fakes, view)
        messages = fakes.messages()
        writes = [w.at for w in fakes.slack_writes() if w.channel == CHANNEL]
        llm_incident, llm_storm = fakes.llm_calls()
        gaps = [b - a for a, b in zip(sorted(writes), sorted(writes)[1:], strict=False)]
        return {
            "alerts": len(expected),
            "groups": groups,
            "posted_in": posted_in,
            "missing_alerts": len(expected - stored),
            "incidents": len(incidents),
            "unrepresented": len({i["id"] for i in incidents} - set(seen)),
            "latencies": sorted(at - start for at in seen.values()),
            "own_latencies": sorted(at - start for at in own_posted_at(fakes).values()),
            "top_level": sum(1 for m in messages if m.thread_ts is None),
            "rollups": sum(1 for m in messages if m.text.startswith("Alert storm:")),
            "writes": len(writes),
            "max_10s": max_in_window(writes, 10.0),
            "max_1s": max_in_window(writes, 1.0),
            "min_gap": min(gaps) if gaps else 0.0,
            "llm_incident": llm_incident,
            "llm_storm": llm_storm,
            "settled": settled,
            "tracebacks": server.tracebacks(),
            "failed_jobs": view.failed_jobs(),
        }
    finally:
        server.stop()


def rows_of(m: Row) -> list[Row]:
    groups, alerts, incidents = m["groups"], m["alerts"], m["incidents"]
    lat: list[float] = m["latencies"]
    last = lat[-1] if lat else float("inf")
    own: list[float] = m["own_latencies"]
    own_text = (
        f"; own messages: {len(own)}, the last after {own[-1]:.1f} s" if own else "; no own message"
    )
    late = "" if m["settled"] else " (jobs still due when the wait ended)"
    llm_total = m["llm_incident"] + m["llm_storm"]
    llm_ok = m["llm_incident"] <= incidents and m["llm_storm"] <= 1
    title = f"storm ({alerts} alerts, {groups} groups, in {m['posted_in']:.0f} s)"
    return [
        {
            "benchmark": f"{title}: top-level Slack messages",
            "measured": f"{m['top_level']} ({m['rollups']} roll-up)",
            "baseline": f"{groups} (one per group, no roll-up)",
            "ratio": f"{m['top_level'] / groups:.2f}",
            "goal": f"<= {groups + 1}",
            "met": m["top_level"] <= groups + 1,
        },
        {
            "benchmark": f"{title}: Slack writes per channel",
            "measured": f"max {m['max_10s']} per 10 s, {m['max_1s']} per 1 s; "
            f"min gap {m['min_gap']:.2f} s ({m['writes']} writes)",
            "baseline": "1/s (slack.channel_rate default)",
            "ratio": f"{m['max_10s'] / 10:.2f}",
            "goal": f"about 1/s: <= {PER_10S_GOAL} per 10 s",
            "met": m["max_10s"] <= PER_10S_GOAL,
        },
        {
            "benchmark": f"{title}: lost",
            "measured": f"{m['missing_alerts']} alerts missing from the store, "
            f"{m['unrepresented']} of {incidents} incidents not in Slack",
            "baseline": f"{alerts} alerts, {groups} groups posted",
            "ratio": f"{(alerts - m['missing_alerts']) / alerts:.2f} stored",
            "goal": "0 lost",
            "met": m["missing_alerts"] == 0 and m["unrepresented"] == 0 and incidents == groups,
        },
        {
            "benchmark": f"{title}: all in Slack after",
            "measured": (
                f"{last:.1f} s (median {statistics.median(lat):.1f} s){own_text}{late}"
                if lat
                else "nothing delivered"
            ),
            "baseline": f"alerts posted over {m['posted_in']:.1f} s",
            "ratio": f"{last / DELIVERY_GOAL:.2f} of goal",
            "goal": f"<= {DELIVERY_GOAL:.0f} s",
            "met": last <= DELIVERY_GOAL and m["unrepresented"] == 0,
        },
        {
            "benchmark": f"{title}: LLM calls",
            "measured": f"{m['llm_incident']} incident narratives + {m['llm_storm']} storm summary",
            "baseline": f"{incidents} incidents",
            "ratio": f"{llm_total / max(1, incidents):.2f} per incident",
            "goal": "<= 1 per incident, or 1 storm summary",
            "met": llm_ok,
        },
    ]


def run(quick: bool = False) -> list[Row]:
    alerts, groups, spread = (400, 20, 4.0) if quick else (1000, 50, 10.0)
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp, running_fakes() as fakes:
        m = asyncio.run(measure(fakes, Path(tmp), alerts, groups, spread))
    if m["tracebacks"] or m["failed_jobs"]:
        print(f"storm: {m['tracebacks']} tracebacks, failed jobs {m['failed_jobs']}")
    return rows_of(m)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 alerts in 20 groups in 4 s")
    for row in run(parser.parse_args().quick):
        print(row)
