"""The narrative subscriber in the running app: a template at once, the LLM narrative
later, no loops on its own events, and one summary for an alert storm.

These run on the system clock with sub-second delays: the timers are real jobs picked up
by the real job runner, with nothing stepped by hand."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bot import keys
from bot.core.clock import Clock, SystemClock
from bot.core.incidents import EventKind, Incident
from bot.narrative import jobs as narrative_jobs
from conftest import payload
from fakes import FakeOpenAI
from narrative_support import (
    DIAGNOSTICS,
    app_settings,
    eventually,
    group,
    narrative_of,
    post_alerts,
    running_app,
    until_quiet,
)


async def incident_where(client: TestClient, incident_id: int, source: str) -> Incident | None:
    incident = await client.app[keys.STORE].get_incident(incident_id)
    return incident if narrative_of(incident).get("source") == source else None


def narrative_events(incident: Incident) -> list[str]:
    return [e.message for e in incident.timeline if e.kind == EventKind.NARRATIVE]


async def diagnostics_done(client: TestClient, incident_id: int, clock: Clock) -> None:
    """What the pipeline records when its diagnostics finish."""
    store = client.app[keys.STORE]
    await store.update_incident(incident_id, now=clock.now(), data={"diagnostics": DIAGNOSTICS})
    await store.append_event(
        incident_id,
        actor="alertpilot",
        kind=EventKind.DIAGNOSTICS_DONE,
        message="3 diagnostics: 1 failed",
        now=clock.now(),
    )


async def test_template_at_once_then_llm_replaces_it(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "- 5xx at 12.5% on checkout (pod-a, pod-b)\nNext: roll back"
    clock = SystemClock()
    # settle: long enough to see the template and add diagnostics before the LLM is due,
    # however slow the machine
    settings = app_settings(tmp_path, fake_openai, llm={"settle": 1.5})
    async with running_app(settings, clock) as client:
        incident_id = await post_alerts(client, group())
        first = await eventually(
            lambda: incident_where(client, incident_id, "template"), what="template narrative"
        )
        # Announced with the template: the provider has not been asked yet.
        assert fake_openai.completions == []
        stored = narrative_of(first)
        assert stored["audience"] == "engineer" and stored["model"] is None
        assert "HighErrorRate" in stored["text"]
        assert narrative_events(first) == ["narrative updated (template)"]

        await diagnostics_done(client, incident_id, clock)
        second = await eventually(
            lambda: incident_where(client, incident_id, "llm"), what="LLM narrative"
        )
        stored = narrative_of(second)
        assert stored["text"] == fake_openai.reply
        assert stored["model"] == "gpt-4o-mini" and stored["tokens"] > 0
        assert narrative_events(second)[-1] == "narrative updated (llm, gpt-4o-mini)"
        assert len(fake_openai.completions) == 1
        sent = fake_openai.completions[0]["messages"][1]["content"]
        assert "5xx share of requests" in sent and "failed" in sent

        # Its own narrative events start nothing: no more calls, no more narratives.
        await asyncio.sleep(0.5)
        await client.app[keys.RUNNER].run_due()
        settled = await client.app[keys.STORE].get_incident(incident_id)
        assert len(fake_openai.completions) == 1
        assert len(narrative_events(settled)) == 2

        # Resolving changes the facts: the narrative is written again.
        resolved = payload("captured-resolved")
        resolved["groupKey"] = group()["groupKey"]
        await post_alerts(client, resolved)
        await eventually(lambda: _calls(fake_openai, 2), what="a narrative of the resolution")
        assert "status: resolved" in fake_openai.completions[1]["messages"][1]["content"]


async def _calls(fake: FakeOpenAI, n: int) -> bool:
    return len(fake.completions) >= n


async def test_template_provider_rewrites_the_template_when_facts_change(tmp_path: Path) -> None:
    clock = SystemClock()
    async with running_app(app_settings(tmp_path, None), clock) as client:
        incident_id = await post_alerts(client, group())
        await eventually(lambda: incident_where(client, incident_id, "template"), what="narrative")
        await diagnostics_done(client, incident_id, clock)

        async def with_diagnostics() -> Incident | None:
            incident = await client.app[keys.STORE].get_incident(incident_id)
            return incident if "5xx share" in narrative_of(incident).get("text", "") else None

        updated = await eventually(with_diagnostics, what="template with diagnostics")
    text = narrative_of(updated)["text"]
    assert "✗ 5xx share of requests: 12.5% (healthy: < 0.05)" in text
    assert "*Next*: start with 5xx share of requests (12.5%)." in text
    assert len(narrative_events(updated)) == 2


@pytest.mark.parametrize("page", [100, 3], ids=["one-page", "pages-of-3"])
async def test_an_alert_storm_gets_one_summary(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    # The summary reads the storm's incidents a page at a time (a storm has hundreds).
    monkeypatch.setattr(narrative_jobs, "STORM_PAGE", page)
    fake_openai.reply = (
        "Storm: 4 incidents across checkout, pay, search, cart. Look at the network."
    )
    clock = SystemClock()
    settings = app_settings(
        tmp_path,
        fake_openai,
        # storm_settle: the fourth incident must open before the summary is written;
        # settle: the first two incidents' own LLM jobs come due only after the storm began
        llm={"storm_threshold": 2, "storm_window": 300, "storm_settle": 2.0, "settle": 3.0},
    )
    services = ["checkout", "pay", "search", "cart"]
    started = time.monotonic()
    async with running_app(settings, clock) as client:
        store = client.app[keys.STORE]
        ids = []
        for service in services:
            ids.append(
                await post_alerts(client, group(f"g-{service}", labels={"service": service}))
            )
            await eventually(
                lambda i=ids[-1]: incident_where(client, i, "template"), what="template narrative"
            )
        # The third incident tipped the count: it and the fourth are marked as a storm.
        marked = [narrative_of(await store.get_incident(i)).get("storm") for i in ids]
        assert marked[0] is None and marked[1] is None
        assert marked[2] == marked[3] and marked[2]["key"] == str(ids[2])

        async def all_summarised() -> list[Incident] | None:
            found = [await store.get_incident(i) for i in ids]
            done = all(narrative_of(i).get("source") == "llm" for i in found)
            return found if done else None

        incidents = await eventually(all_summarised, what="the storm summary on every incident")
        # the per-incident LLM jobs come due, and stand down
        await asyncio.sleep(max(0.0, started + 3.5 - time.monotonic()))
        await client.app[keys.RUNNER].run_due()
    assert len(fake_openai.completions) == 1  # one summary, not one narrative each
    sent = fake_openai.completions[0]["messages"][1]["content"]
    assert "alert storm" in sent
    for service in services:
        assert service in sent
    for incident in incidents:
        stored = narrative_of(incident)
        assert stored["text"] == fake_openai.reply
        assert stored["storm"]["incidents"] == 4
        assert narrative_events(incident)[-1] == "storm summary updated (llm, gpt-4o-mini)"
    metrics = client.app[keys.NARRATIVES].metrics
    assert metrics.registry.get_sample_value("alertpilot_narrative_storms_total") == 1


async def test_the_llm_narrative_comes_even_if_the_pipeline_never_reports(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "checkout 5xx; no diagnostics ran"
    settings = app_settings(tmp_path, fake_openai, llm={"settle": 60, "llm_fallback_delay": 0.3})
    async with running_app(settings, SystemClock()) as client:
        incident_id = await post_alerts(client, group())
        found = await eventually(
            lambda: incident_where(client, incident_id, "llm"), what="the fallback LLM narrative"
        )
    assert narrative_of(found)["text"] == fake_openai.reply
    assert len(fake_openai.completions) == 1


async def test_the_fallback_and_the_debounced_job_falling_due_together_call_the_model_once(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Both jobs fall due at once (settle == fallback delay; with no playbook the pipeline
    asks for the narrative at once): one model call, not two."""
    fake_openai.reply = "checkout 5xx after the deploy"
    fake_openai.delay = 0.3  # the first call is still running when the second job starts
    settings = app_settings(
        tmp_path, fake_openai, llm={"settle": 0.2, "llm_fallback_delay": 0.2},
        workers={"lanes": {"narrative": 4}},
    )  # fmt: skip
    async with running_app(settings, SystemClock()) as client:
        incident_id = await post_alerts(client, group())
        await eventually(
            lambda: incident_where(client, incident_id, "llm"), what="the LLM narrative"
        )
        await until_quiet(client, incident_id)
    assert len(fake_openai.completions) == 1
