"""The console's playbooks page and the store query behind it (``Store.playbook_stats``):
how often each playbook matched, how fast its incidents were acknowledged and resolved
over 7 and 30 days, and what its remediation steps did."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import ManualClock
from bot.remediation.records import StepState
from bot.store.base import IncidentQuery, PlaybookStats
from consolekit import act, console_section, said, sign_in
from remediation_kit import Receiver, playbook, start

DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store_section(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The store's section: SQLite, or a fresh database on the tests' PostgreSQL (the
    console's queries are written once per backend)."""
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path}/alertpilot.db"}
    return {"url": request.getfixturevalue("pg_url")}


def approval_step(receiver: Receiver) -> dict[str, Any]:
    return {
        "name": "restart",
        "mode": "approval",
        "cooldown": 0,
        "action": {"kind": "webhook", "url": f"{receiver.url}/restart"},
    }


def cells(html: str, name: str, window: str) -> dict[str, str]:
    """The row of playbook ``name`` for ``window`` ("7 days"), its cells by class."""
    row = re.search(
        rf'<tr[^>]*data-playbook="{name}" data-window="{window}">(.*?)</tr>', html, re.S
    )
    assert row, f"no row for {name}, {window}"
    found = dict(re.findall(r'<td class="(\w+)">([^<]*)</td>', row.group(1)))
    found["cells"] = ",".join(re.findall(r"<td>([^<]*)</td>", row.group(1)))
    return found


async def test_playbooks_page_counts_matches_times_and_steps(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = ManualClock()
    async with Receiver() as receiver:
        h = await start(
            aiohttp_client,
            tmp_path,
            [playbook(approval_step(receiver))],
            clock=clock,
            background=False,
            console=console_section(),
            remediation={"mode": "approval", "allowed_urls": [receiver.url]},
        )
        # one incident 20 days ago, acknowledged after 10 minutes and never resolved
        old = await h.fire({"alertname": "CacheDown", "service": "search"})
        await h.settle()
        csrf = await sign_in(h.client)
        clock.advance(600)
        await act(h.client, csrf, old, "acknowledge")
        clock.advance(20 * DAY - 600)
        # one today: acknowledged after 2 minutes, approved, resolved after 5 minutes
        new = await h.fire({"alertname": "CacheDown", "service": "cart"})
        await h.settle()
        assert (await h.client.get("/ui/")).status == 401  # 20 days on: signed out
        h.client.session.cookie_jar.clear()
        csrf = await sign_in(h.client)
        clock.advance(120)
        await act(h.client, csrf, new, "acknowledge")
        _, html = await act(h.client, csrf, new, "approve", step="restart")
        assert said(html) == f"You approved restart on #{new}."
        await h.settle()
        assert (await h.step(new, "restart")).state is StepState.SUCCEEDED
        clock.advance(180)
        await act(h.client, csrf, new, "resolve")
        await h.settle()

        html = await (await h.client.get("/ui/playbooks")).text()
        week, month = cells(html, "cache", "7 days"), cells(html, "cache", "30 days")
        assert (week["matched"], week["mtta"], week["mttr"]) == ("1", "2m", "5m")
        assert (month["matched"], month["mtta"], month["mttr"]) == ("2", "6m", "5m")
        # acknowledged, resolved, ran, verified, failed, rolled back
        assert week["cells"] == "7 days,1,1,1,0,0,0"
        assert month["cells"] == "30 days,2,1,1,0,0,0"
        assert "1 remediations" in html and "0 diagnostics" in html


async def test_playbook_stats_read_remediation_outcomes(
    aiohttp_client: Any, tmp_path: Path, store_section: dict[str, Any]
) -> None:
    clock = ManualClock()
    h = await start(
        aiohttp_client,
        tmp_path,
        [
            playbook(
                {
                    "name": "noop",
                    "mode": "suggest",
                    "action": {"kind": "webhook", "url": "http://127.0.0.1:9/"},
                }
            )
        ],
        clock=clock,
        background=False,
        store=store_section,
    )
    ids = [await h.fire({"alertname": "CacheDown", "service": s}) for s in ("a", "b", "c")]
    await h.settle()
    result, rolled_back = {"status": "ok", "summary": "ran"}, {"state": "succeeded"}
    outcomes = [
        {"playbook": "cache", "state": "verified", "result": result},
        {
            "playbook": "cache",
            "state": "failed",
            "result": result,
            "rollback": rolled_back,
        },
        {"playbook": "cache", "state": "suggested"},
    ]
    for incident_id, record in zip(ids, outcomes, strict=True):
        await h.store.update_incident(
            incident_id, now=clock.now(), data={"remediations": {"noop": record}}
        )
    [stats] = await h.store.playbook_stats()
    assert stats == PlaybookStats(
        playbook="cache", matched=3, ran=2, verified=1, failed=1, rolled_back=1
    )
    assert await h.store.playbook_stats(since=clock.now() + 1) == []


async def test_search_incidents_by_each_filter(
    aiohttp_client: Any, tmp_path: Path, store_section: dict[str, Any]
) -> None:
    clock = ManualClock()
    h = await start(
        aiohttp_client, tmp_path, [], clock=clock, background=False, store=store_section
    )
    first = await h.fire({"alertname": "Disk", "service": "db"}, labels={"volume": "Data-01"})
    clock.advance(3600)
    second = await h.fire({"alertname": "Latency", "service": "api"})
    hostile = await h.fire(
        {"alertname": "Odd", "service": 'db",x'}, labels={"note": 'say "hi"\\ \u0000'}
    )
    store = h.store

    async def ids(**query: Any) -> list[int]:
        return [i.id for i in await store.search_incidents(IncidentQuery(**query))]

    assert await ids() == [hostile, second, first]
    assert await ids(service="db") == [first]
    assert await ids(service='db",x') == [hostile]
    assert await ids(text='"hi"\\') == [hostile]  # quotes and backslashes as typed
    assert await ids(text="data-01") == [first]  # an alert's label value, any case
    assert await ids(text="VOLUME") == [first]  # a label name
    assert await ids(text="latency") == [second]  # the title
    assert await ids(text="%") == []  # no wildcard
    assert await ids(since=clock.now() - 60) == [hostile, second]
    assert await ids(until=clock.now() - 60) == [first]
    assert await ids(limit=1, offset=2) == [first]
