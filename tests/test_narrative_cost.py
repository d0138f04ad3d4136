"""Cost control: the cache, the daily token budget with its warnings, the concurrency cap."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from pathlib import Path

from bot.core.incidents import EventKind
from bot.narrative.cache import PREFIX, cache_key
from fakes import FakeOpenAI
from narrative_support import group, metric, narrator_for, open_incident


async def test_a_second_identical_incident_is_served_from_the_cache(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "checkout is failing; roll back"
    async with narrator_for(tmp_path, fake_openai, cache_ttl=3600) as (narrator, store, clock):
        first = await open_incident(store, clock, group("g-first"))
        clock.advance(600)  # ten minutes later the same alerts open another incident
        second = await open_incident(store, clock, group("g-second"))
        assert first.id != second.id

        fresh = await narrator.for_incident(first, "engineer")
        again = await narrator.for_incident(second, "engineer")
        assert len(fake_openai.completions) == 1
        assert (again.source, again.cached, again.tokens) == ("llm", True, 0)
        assert again.text == fresh.text
        assert metric(narrator, "alertpilot_narrative_cache_total", {"result": "hit"}) == 1
        assert metric(narrator, "alertpilot_narrative_cache_total", {"result": "miss"}) == 1

        # The key is SHA-256 of (provider, model, rendered prompt), kept in the store.
        sent = fake_openai.completions[0]["messages"]
        rendered = f"{sent[0]['content']}\n\x00\n{sent[1]['content']}"
        key = cache_key("openai", "gpt-4o-mini", rendered)
        assert key == hashlib.sha256(f"openai\x00gpt-4o-mini\x00{rendered}".encode()).hexdigest()
        assert await store.kv_get(PREFIX + key, clock.now()) is not None

        other_audience = await narrator.for_incident(second, "stakeholder")
        assert not other_audience.cached and len(fake_openai.completions) == 2

        clock.advance(3601)  # past the TTL
        expired = await narrator.for_incident(second, "engineer")
    assert not expired.cached
    assert len(fake_openai.completions) == 3


async def test_budget_warns_at_80_90_100_then_only_templates(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "narrative"
    async with narrator_for(tmp_path / "probe", fake_openai, daily_token_budget=0) as (
        probe,
        store,
        clock,
    ):
        cost = (
            await probe.for_incident(await open_incident(store, clock, group()), "engineer")
        ).tokens
    budget = int(cost / 0.85)  # the first call lands at 85%, the second past 100%

    async with narrator_for(tmp_path, fake_openai, daily_token_budget=budget) as (
        narrator,
        store,
        clock,
    ):
        a = await open_incident(store, clock, group("g-a"))
        b = await open_incident(store, clock, group("g-b", labels={"service": "pay"}))
        c = await open_incident(store, clock, group("g-c", labels={"service": "search"}))
        assert (await narrator.for_incident(a, "engineer")).source == "llm"
        assert (await narrator.for_incident(b, "engineer")).source == "llm"
        calls = len(fake_openai.completions)
        over = await narrator.for_incident(c, "engineer")
        assert (over.source, over.reason) == ("template", "budget_exhausted")
        assert len(fake_openai.completions) == calls  # no call past 100%

        warnings_a = [e for e in await store.events(a.id) if e.kind == EventKind.NARRATIVE_BUDGET]
        warnings_b = [e for e in await store.events(b.id) if e.kind == EventKind.NARRATIVE_BUDGET]
        assert [e.data["level"] for e in warnings_a] == [80]
        assert [e.data["level"] for e in warnings_b] == [90, 100]
        assert "80% used" in warnings_a[0].message
        assert "templates until tomorrow" in warnings_b[1].message
        for level in ("80", "90", "100"):
            assert (
                metric(narrator, "alertpilot_narrative_budget_warnings_total", {"level": level})
                == 1
            )
        assert metric(narrator, "alertpilot_narrative_budget_used_ratio") >= 1.0

        clock.advance(86400)  # a new day (UTC): the budget is fresh again
        tomorrow = await narrator.for_incident(c, "engineer")
    assert tomorrow.source == "llm"


async def test_concurrency_limit_serialises_provider_calls(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.delay = 0.2
    async with narrator_for(tmp_path, fake_openai, concurrency=1) as (narrator, store, clock):
        incidents = [
            await open_incident(store, clock, group(f"g-{i}", labels={"service": f"svc{i}"}))
            for i in range(3)
        ]
        results = await asyncio.gather(
            *(narrator.for_incident(incident, "engineer") for incident in incidents)
        )
    assert [r.source for r in results] == ["llm"] * 3
    arrivals = sorted(r.at for r in fake_openai.requests_to("/v1/chat/completions"))
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= 0.18 for gap in gaps), gaps  # one at a time
