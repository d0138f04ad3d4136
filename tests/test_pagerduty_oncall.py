"""Who is on call: GET /api/v1/oncall and keys.ONCALL over the REST API's paginated
``/oncalls``, cached briefly, behind ``server.api_token``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.core.clock import ManualClock
from bot.pagerduty.oncall import OnCallUnavailable
from conftest import API
from fakes import FakePagerDuty, oncall_entry
from pagerduty_kit import start_bot

API_TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def roster(n: int) -> list[dict[str, Any]]:
    return [
        oncall_entry(f"User {i:03d}", f"PU{i:03d}", schedule_id="PSA" if i % 2 else "PSB",
                     level=1 + i % 3)
        for i in range(n)
    ]  # fmt: skip


async def test_oncall_endpoint_pages_through_and_caches(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    clock = ManualClock()
    fake_pagerduty.set_oncalls(roster(230))
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, clock, server={"api_token": API_TOKEN}
    )
    resp = await bot.client.get("/api/v1/oncall", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    oncalls = body["oncalls"]
    assert len(oncalls) == 230 and body["schedule"] is None
    assert {o["user"]["id"] for o in oncalls} == {f"PU{i:03d}" for i in range(230)}
    levels = [o["escalation_level"] for o in oncalls]
    assert levels == sorted(levels)
    first = next(o for o in oncalls if o["user"]["id"] == "PU001")
    assert first == {
        "user": {
            "id": "PU001",
            "summary": "User 001",
            "html_url": "https://acme.pagerduty.com/users/PU001",
        },
        "escalation_policy": {
            "id": "PESCAL1",
            "summary": "Default",
            "html_url": "https://acme.pagerduty.com/escalation_policies/PESCAL1",
        },
        "escalation_level": 2,
        "schedule": {
            "id": "PSA",
            "summary": "Primary",
            "html_url": "https://acme.pagerduty.com/schedules/PSA",
        },
        "start": "2024-01-01T00:00:00Z",
        "end": "2024-01-08T00:00:00Z",
    }
    pages = fake_pagerduty.requests_to("/oncalls")
    assert [r.query["offset"] for r in pages] == ["0", "100", "200"]
    assert all(
        r.headers["Authorization"] == f"Token token={fake_pagerduty.api_token}" for r in pages
    )

    await bot.client.get("/api/v1/oncall", headers=AUTH)
    clock.advance(59)
    await bot.client.get("/api/v1/oncall", headers=AUTH)
    assert len(fake_pagerduty.requests_to("/oncalls")) == 3  # served from the cache
    clock.advance(1)  # pagerduty.oncall_cache_ttl: 60 s
    fake_pagerduty.set_oncalls(roster(2))
    body = await (await bot.client.get("/api/v1/oncall", headers=AUTH)).json()
    assert [o["user"]["id"] for o in body["oncalls"]] == ["PU000", "PU001"]
    assert len(fake_pagerduty.requests_to("/oncalls")) == 4


async def test_oncall_for_one_schedule(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    fake_pagerduty.set_oncalls(roster(7))
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    body = await (await bot.client.get("/api/v1/oncall?schedule=PSA", headers=API)).json()
    assert body["schedule"] == "PSA"
    assert sorted(o["user"]["id"] for o in body["oncalls"]) == ["PU001", "PU003", "PU005"]
    [request] = fake_pagerduty.requests_to("/oncalls")
    assert request.query.getall("schedule_ids[]") == ["PSA"]
    # the directory under keys.ONCALL (what Slack's `oncall` uses) shares the cache
    directory = bot.app[keys.ONCALL]
    assert [o.user.id for o in await directory.oncall("PSA")] == [
        o["user"]["id"] for o in body["oncalls"]
    ]
    assert len(fake_pagerduty.requests_to("/oncalls")) == 1
    assert len(await directory.oncall()) == 7
    assert len(fake_pagerduty.requests_to("/oncalls")) == 2
    resp = await bot.client.get("/api/v1/oncall?schedule=P'; DROP", headers=API)
    assert resp.status == 400


async def test_oncall_needs_the_api_token(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        server={"api_token": API_TOKEN},
    )
    assert (await bot.client.get("/api/v1/oncall", headers=API)).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await bot.client.get("/api/v1/oncall", headers=wrong)).status == 401
    assert fake_pagerduty.requests == []


async def test_pagerduty_failures_answer_502_and_are_not_cached(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    fake_pagerduty.set_oncalls(roster(3))
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    fake_pagerduty.fail_next(2, status=500, match="/oncalls")  # the one retry fails too
    resp = await bot.client.get("/api/v1/oncall", headers=API)
    assert resp.status == 502
    assert (await resp.json())["error"] == "pagerduty_unavailable"
    assert [r.status for r in fake_pagerduty.requests] == [500, 500]
    fake_pagerduty.fail_next(1, status=503, match="/oncalls")  # one failure: the retry works
    body = await (await bot.client.get("/api/v1/oncall", headers=API)).json()
    assert len(body["oncalls"]) == 3


async def test_a_wrong_rest_token_is_reported_not_leaked(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        pagerduty={"api_token": "u+wrong-token-value"},
    )
    resp = await bot.client.get("/api/v1/oncall", headers=API)
    assert resp.status == 502
    text = await resp.text()
    assert "HTTP 401" in text and "wrong-token" not in text
    with pytest.raises(OnCallUnavailable, match="HTTP 401"):
        await bot.app[keys.ONCALL].oncall()


async def test_no_api_token_means_no_directory(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, ManualClock(), pagerduty={"api_token": ""}
    )
    assert keys.ONCALL not in bot.app
    resp = await bot.client.get("/api/v1/oncall", headers=API)
    assert resp.status == 404
