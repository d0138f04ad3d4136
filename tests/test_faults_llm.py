"""LLM faults: a timeout, a 500 and an exhausted quota. The webhook answers at once even
while a provider call hangs; the incident keeps its template narrative and the timeline
says why the LLM's was not used; /metrics counts the error by type; and once the
provider answers again the LLM narrative comes, once.

(tests/test_narrative_llm.py covers which errors are retried and the circuit breaker.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.app import create_app
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Incident
from conftest import make_settings
from fakes import FakeOpenAI
from faultkit import ack, alert_group, quiet, readyz, scrape, until
from narrative_support import llm_section, narrative_of

FALLBACK_DELAY = 120.0  # llm.llm_fallback_delay: the LLM narrative's second chance
SETTLE = 3.0  # llm.settle: the LLM narrative is asked for this long after the facts change


def narrative_events(incident: Incident) -> list[str]:
    return [e.message for e in incident.timeline if e.kind == EventKind.NARRATIVE]


def hang(fake: FakeOpenAI) -> None:
    fake.delay = 3.0  # far beyond llm.timeout


def error_500(fake: FakeOpenAI) -> None:
    fake.fail_next(3, status=500)


def quota(fake: FakeOpenAI) -> None:
    fake.quota_next(1)


@pytest.mark.parametrize(
    ("fault", "reason", "calls"),
    [(hang, "timeout", 3), (error_500, "server", 3), (quota, "quota", 1)],
    ids=["timeout", "500", "quota"],
)
async def test_llm_fault_keeps_the_template_with_the_reason_then_heals(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    fault: Callable[[FakeOpenAI], None],
    reason: str,
    calls: int,
) -> None:
    clock = ManualClock()
    fake_openai.reply = "- checkout is failing with 5xx errors\nNext: roll back the deploy"
    settings = make_settings(
        tmp_path,
        llm=llm_section(fake_openai, timeout=0.2, settle=SETTLE, llm_fallback_delay=FALLBACK_DELAY),
    )
    client = await aiohttp_client(create_app(settings, clock=clock))
    store = client.app[keys.STORE]
    await ack(client, alert_group(1))
    await quiet(client)
    fault(fake_openai)

    clock.advance(SETTLE)
    calling = asyncio.create_task(quiet(client))
    # the provider is being asked (and is failing) now ...
    await until(lambda: asyncio.sleep(0, fake_openai.completions), what="the LLM call")
    await ack(client, alert_group(2))  # ... and the webhook does not wait for it
    await calling
    await quiet(client)
    assert 1 <= len(fake_openai.completions) <= calls  # a busy machine may time out sooner

    incident = await store.get_incident(1)
    narrative = narrative_of(incident)
    assert (narrative["source"], narrative["reason"]) == ("template", reason)
    assert "Fault001" in narrative["text"]
    assert narrative_events(incident)[-1] == f"narrative updated (template; LLM failed: {reason})"
    metrics = await scrape(client)
    assert metrics.value("alertpilot_narrative_errors_total", type=reason) == 1
    assert metrics.value("alertpilot_narrative_requests_total", provider="openai",
                         status="error") == 1  # fmt: skip
    assert (await readyz(client))[0] == 200
    assert metrics.value("alertpilot_jobs_failed") == 0

    # The provider is back: the LLM narrative comes at the fallback delay, once.
    fake_openai.delay = 0.0
    fake_openai.clear_faults()
    clock.advance(FALLBACK_DELAY - SETTLE)  # incident 1's second chance is due
    await quiet(client)
    incident = await store.get_incident(1)
    assert narrative_of(incident)["source"] == "llm"
    assert narrative_of(incident)["text"] == fake_openai.reply
    assert narrative_events(incident)[-1] == "narrative updated (llm, gpt-4o-mini)"
    ok = [r for r in fake_openai.requests if r.status == 200]
    assert len(ok) == 2  # incident 1's second chance, and incident 2's first call
    clock.advance(3600)
    await quiet(client)
    assert len([r for r in fake_openai.requests if r.status == 200]) == 2
    assert [narrative_of(await store.get_incident(i))["source"] for i in (1, 2)] == ["llm"] * 2
