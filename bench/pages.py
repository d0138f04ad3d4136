"""30 P0 incidents in 3 s: how soon each one is paged and shown in Slack after its ack,
with Prometheus healthy, refusing or hanging, and with the LLM hanging.

30 distinct alert groups (3 alerts each, ``alertname="ErrorRateOutage"``, severity label
``critical``, a ``service`` of their own) are posted to ``POST /alertmanager`` evenly over
3 s, each at its moment whatever the earlier ones are doing; a group's ack is when its
200 arrived. ``ErrorRateOutage`` is what the shipped ``error-rate-outage`` playbook
(``playbooks/error-rate.yaml``) matches: 6 PromQL diagnostics and one on Alertmanager's
alerts, and ``severity: P0``, which makes the incident P0 when the playbook matches (the
label alone gives P1: ``critical`` maps to P1 in the default ``incidents.severity_map``),
and ``escalation: page: immediately`` (the default policy pages P0 at once, too).

alertpilot runs the shipped playbooks with the shipped config's ``diagnostics`` and
``remediation`` sections, Slack, PagerDuty (over HTTPS) and the LLM as the loopback fakes
(Slack at 50 writes per second per channel, so Slack's pace is not what is measured),
and its defaults otherwise, Prometheus's timeout (10 s) and retries (2) among them: the
point is a bad day as it comes. For each incident:

- ack -> its PagerDuty trigger reaching the fake (found by ``dedup_key``). Goal: all 30
  triggered, each within 5 s of its ack.
- ack -> the first Slack message that shows it: its own message (in the channel, or in
  a storm roll-up's thread) or a roll-up listing it, whichever came first. Goal: max
  <= 2 s, p50 <= 1 s.

Four conditions, each with a fresh alertpilot, store and fakes:

- Prometheus healthy: a loopback fake that answers every query at once, with no data
  (``bench/fake_prometheus.py``);
- Prometheus refusing connections;
- Prometheus hanging (it accepts connections and never answers);
- the LLM hanging, Prometheus healthy.

Alertmanager's alert list (one diagnostic) is the healthy fake in every condition. Each
condition waits up to 60 s after the last ack; a trigger or message that has not come by
then counts as missed.

    .venv/bin/python bench/pages.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from common import (
    NOWHERE,
    Alertpilot,
    Json,
    Row,
    StoreView,
    group_payload,
    post_webhook,
    shipped_playbooks,
)
from fake_prometheus import answered, fake_prometheus
from fakes_runner import Fakes, running_fakes
from hang import hanging_server

ALERTNAME = "ErrorRateOutage"  # playbooks/error-rate.yaml: error-rate-outage, severity P0
PAGE_GOAL = 5.0
SLACK_MAX_GOAL = 2.0
SLACK_P50_GOAL = 1.0
MISSING = float("inf")  # a trigger or message that did not come in time
CONDITIONS = ("Prometheus healthy", "Prometheus refusing", "Prometheus hanging", "LLM hanging")


async def post_spread(url: str, bodies: list[Json], spread: float) -> dict[str, float]:
    """POST each body at its moment within ``spread`` seconds, without waiting for the
    answers to earlier ones; return service -> when its 200 arrived (monotonic)."""
    acks: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:

        async def send(body: Json) -> None:
            if await post_webhook(session, url, body):
                acks[body["groupLabels"]["service"]] = time.monotonic()

        tasks = []
        start = time.monotonic()
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i * spread / len(bodies) - time.monotonic()))
            tasks.append(asyncio.create_task(send(body)))
        await asyncio.gather(*tasks)
    return acks


def services_by_incident(view: StoreView) -> tuple[dict[int, str], dict[str, str]]:
    """(incident id -> service, incident key -> service) from the store."""
    by_id, by_key = {}, {}
    for incident in view.incidents():
        service = str(incident["group_labels"].get("service", ""))
        by_id[int(incident["id"])] = service
        by_key[str(incident["key"])] = service
    return by_id, by_key


def triggered_at(fakes: Fakes, by_key: dict[str, str]) -> dict[str, float]:
    """Service -> when its first PagerDuty trigger reached the fake. The ``dedup_key`` is
    the incident's key; the payload's ``component`` (the ``service`` label) stands in if
    a key is not found."""
    seen: dict[str, float] = {}
    for at, event in fakes.pd_trigger_arrivals():
        payload = event.get("payload")
        component = payload.get("component") if isinstance(payload, dict) else None
        service = by_key.get(str(event.get("dedup_key")), str(component))
        seen[service] = min(seen.get(service, at), at)
    return seen


def shown_at(fakes: Fakes, by_id: dict[int, str]) -> dict[str, tuple[float, bool]]:
    """Service -> (when Slack first showed it, whether that was a roll-up listing)."""
    seen: dict[str, tuple[float, bool]] = {}
    for incident_id, posts in fakes.own_posts().items():
        times = [p.posted_at for p in posts if p.posted_at is not None]
        if times and incident_id in by_id:
            seen[by_id[incident_id]] = (min(times), False)
    for write in fakes.slack_writes():
        for incident_id in write.rollup_ids:
            service = by_id.get(incident_id)
            if service is not None and (service not in seen or write.at < seen[service][0]):
                seen[service] = (write.at, True)
    return seen


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def condition(name: str, fakes: Fakes, tmp: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """alertpilot's config sections for one condition, and the healthy fake's URL.
    Prometheus gets only its ``url``: its timeout and retries are alertpilot's defaults."""
    with fake_prometheus(tmp) as healthy, hanging_server() as hang:
        prometheus = {"Prometheus refusing": NOWHERE, "Prometheus hanging": hang}.get(name, healthy)
        llm = {"base_url": f"{hang}/v1"} if name == "LLM hanging" else None
        sections = {
            **shipped_playbooks(),
            **fakes.sections(channel_rate=50.0, llm=llm),
            "prometheus": {"url": prometheus},
            "alertmanager": {"url": healthy},
        }
        yield sections, healthy


def one_condition(name: str, count: int, spread: float, wait: float) -> Row:
    bodies = [group_payload(i, alertname=ALERTNAME, tag="p0") for i in range(count)]
    services = [str(b["groupLabels"]["service"]) for b in bodies]
    with (
        tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp,
        running_fakes() as fakes,
        condition(name, fakes, Path(tmp)) as (sections, healthy),
    ):
        server = Alertpilot(Path(tmp), **sections)
        view = StoreView(server.db)
        server.start()
        try:
            began = time.monotonic()
            acks = asyncio.run(post_spread(server.url, bodies, spread))
            posted_in = time.monotonic() - began
            deadline = max(acks.values(), default=time.monotonic()) + wait
            pages: dict[str, float] = {}
            shown: dict[str, tuple[float, bool]] = {}
            while True:
                with contextlib.suppress(sqlite3.OperationalError):  # busy: ask again
                    by_id, by_key = services_by_incident(view)
                    pages = triggered_at(fakes, by_key)
                    shown = shown_at(fakes, by_id)
                if all(s in pages and s in shown for s in services) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            incidents = view.incidents()
            queries = answered(healthy)
            return {
                "name": name,
                "count": count,
                "services": services,
                "spread": spread,
                "posted_in": posted_in,
                "acked": len(acks),
                "page": {s: pages[s] - acks[s] for s in services if s in acks and s in pages},
                "shown": {
                    s: (shown[s][0] - acks[s], shown[s][1])
                    for s in services
                    if s in acks and s in shown
                },
                "p0": sum(1 for i in incidents if i["severity"] == "P0"),
                "incidents": len(incidents),
                "failed_jobs": view.failed_jobs(),
                "tracebacks": server.tracebacks(),
                "queries": queries,
                "wait": wait,
            }
        finally:
            server.kill()  # no drain: its store is thrown away


def seconds(value: float, wait: float) -> str:
    return f"> {wait:.0f} s" if value == MISSING else f"{value:.2f} s"


def delays(m: Row) -> tuple[list[float], list[float]]:
    """(ack -> trigger, ack -> first Slack message) per incident; ``MISSING`` when none came."""
    page = [m["page"].get(s, MISSING) for s in m["services"]]
    shown = [m["shown"][s][0] if s in m["shown"] else MISSING for s in m["services"]]
    return page, shown


def rows_of(m: Row, healthy: Row | None) -> list[Row]:
    count, wait = m["count"], m["wait"]
    title = f"{count} P0 incidents in {m['spread']:.0f} s, {m['name']}"
    page, shown = delays(m)
    rolled = sum(1 for _, rollup in m["shown"].values() if rollup)
    paged, seen = len(m["page"]), len(m["shown"])
    page_max, page_p50 = max(page), percentile(page, 0.5)
    shown_max, shown_p50 = max(shown), percentile(shown, 0.5)
    queries = m["queries"]
    note = (
        f"{m['acked']} of {count} acked; {m['p0']} of {m['incidents']} incidents P0; "
        f"the healthy fake answered {queries['query']} queries, "
        f"{queries['query_range']} range queries, {queries['alerts']} alert lists"
        + (f"; failed jobs {m['failed_jobs']}" if m["failed_jobs"] else "")
        + (f"; {m['tracebacks']} tracebacks in the log" if m["tracebacks"] else "")
    )
    if healthy is None:
        page_base = shown_base = f"{count} groups acked over {m['posted_in']:.1f} s"
    else:
        healthy_page, healthy_shown = delays(healthy)
        page_base = f"max {seconds(max(healthy_page), wait)} with Prometheus healthy"
        shown_base = f"max {seconds(max(healthy_shown), wait)} with Prometheus healthy"
    missed = f"; {count - paged} not triggered within {wait:.0f} s" if paged < count else ""
    unseen = f"; {count - seen} not shown within {wait:.0f} s" if seen < count else ""
    return [
        {
            "benchmark": f"{title}: ack -> PagerDuty trigger",
            "measured": f"{paged} of {count} triggered; max {seconds(page_max, wait)}, "
            f"p50 {seconds(page_p50, wait)}{missed}",
            "baseline": page_base,
            "ratio": f"{page_max / PAGE_GOAL:.2f} of goal" if page_max != MISSING else "n/a",
            "goal": f"{count} of {count}, each <= {PAGE_GOAL:.0f} s after its ack",
            "met": paged == count and page_max <= PAGE_GOAL,
            "note": note,
        },
        {
            "benchmark": f"{title}: ack -> first Slack message",
            "measured": f"p50 {seconds(shown_p50, wait)}, max {seconds(shown_max, wait)} "
            f"({seen} of {count} shown, {rolled} first in a storm roll-up){unseen}",
            "baseline": shown_base,
            "ratio": f"{shown_max / SLACK_MAX_GOAL:.2f} of goal" if shown_max != MISSING else "n/a",
            "goal": f"max <= {SLACK_MAX_GOAL:.0f} s, p50 <= {SLACK_P50_GOAL:.0f} s",
            "met": seen == count and shown_max <= SLACK_MAX_GOAL and shown_p50 <= SLACK_P50_GOAL,
        },
    ]


def run(quick: bool = False) -> list[Row]:
    count, spread, wait = (10, 1.0, 30.0) if quick else (30, 3.0, 60.0)
    rows: list[Row] = []
    healthy: Row | None = None
    for name in CONDITIONS:
        m = one_condition(name, count, spread, wait)
        rows += rows_of(m, healthy)
        if healthy is None:
            healthy = m
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 incidents in 1 s")
    for row in run(parser.parse_args().quick):
        print(row)
