"""The provider call: bounded attempts, what is retried and what is not, the timeout,
and the circuit breaker, against the loopback OpenAI fake over real sockets."""

from __future__ import annotations

import time
from pathlib import Path

from fakes import FakeOpenAI
from narrative_support import (
    DIAGNOSTICS,
    group,
    metric,
    narrator_for,
    open_incident,
    with_diagnostics,
)


async def test_a_healthy_provider_writes_the_narrative(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "- 5xx at 12.5% on checkout\nNext: roll back the last deploy"
    async with narrator_for(tmp_path, fake_openai) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        incident = await with_diagnostics(store, clock, incident.id, DIAGNOSTICS)  # the 12.5%
        result = await narrator.for_incident(incident, "engineer")
    assert (result.source, result.model, result.cached) == ("llm", "gpt-4o-mini", False)
    assert result.text == fake_openai.reply
    assert result.tokens > 0
    request = fake_openai.requests_to("/v1/chat/completions")[0]
    assert request.headers["Authorization"] == f"Bearer {fake_openai.api_key}"
    assert request.body["model"] == "gpt-4o-mini"
    assert metric(narrator, "alertpilot_narrative_requests_total",
                  {"provider": "openai", "status": "success"}) == 1  # fmt: skip
    assert metric(narrator, "alertpilot_narrative_tokens_total",
                  {"provider": "openai", "model": "gpt-4o-mini"}) == result.tokens  # fmt: skip


async def test_quota_exhausted_is_not_retried(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.quota_next(3)
    async with narrator_for(tmp_path, fake_openai) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        result = await narrator.for_incident(incident, "engineer")
    assert len(fake_openai.completions) == 1
    assert (result.source, result.reason) == ("template", "quota")
    assert "HighErrorRate" in result.text
    assert metric(narrator, "alertpilot_narrative_errors_total", {"type": "quota"}) == 1


async def test_unauthorized_is_not_retried(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.unauthorized = True
    async with narrator_for(tmp_path, fake_openai) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        result = await narrator.for_incident(incident, "engineer")
    assert len(fake_openai.completions) == 1
    assert (result.source, result.reason) == ("template", "auth")


async def test_server_errors_are_retried_up_to_three_attempts(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with narrator_for(tmp_path, fake_openai) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        fake_openai.fail_next(2, status=500)
        recovered = await narrator.for_incident(incident, "engineer")
        assert len(fake_openai.completions) == 3
        assert recovered.source == "llm"

        fake_openai.fail_next(5, status=502)
        other = await open_incident(store, clock, group("g-other", labels={"service": "pay"}))
        given_up = await narrator.for_incident(other, "stakeholder")
    assert len(fake_openai.completions) == 6  # three more, not five
    assert (given_up.source, given_up.reason) == ("template", "server")


async def test_rate_limit_honours_retry_after_within_bounds(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with narrator_for(tmp_path, fake_openai, retry_after_max=1.0) as (
        narrator,
        store,
        clock,
    ):
        incident = await open_incident(store, clock, group())
        fake_openai.rate_limit_next(1, retry_after=0.2)
        started = time.monotonic()
        waited = await narrator.for_incident(incident, "engineer")
        assert time.monotonic() - started >= 0.2
        assert waited.source == "llm" and len(fake_openai.completions) == 2

        fake_openai.rate_limit_next(1, retry_after=30)  # longer than retry_after_max
        other = await open_incident(store, clock, group("g-other", labels={"service": "pay"}))
        refused = await narrator.for_incident(other, "engineer")
    assert len(fake_openai.completions) == 3
    assert (refused.source, refused.reason) == ("template", "rate_limit")


async def test_the_call_timeout_is_honoured(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.delay = 10.0
    async with narrator_for(tmp_path, fake_openai, timeout=0.2) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        started = time.monotonic()
        result = await narrator.for_incident(incident, "engineer")
        elapsed = time.monotonic() - started
    assert (result.source, result.reason) == ("template", "timeout")
    assert len(fake_openai.completions) == 3
    # three attempts of 0.2 s, not one of 10 s (let alone the SDK's 600 s); the room is for
    # a loaded machine
    assert elapsed < 5


async def test_breaker_opens_after_five_errors_and_templates_are_used(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.outage(True)
    async with narrator_for(
        tmp_path, fake_openai, max_attempts=1, breaker_window=30, breaker_cooldown=60
    ) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        for _ in range(5):
            failed = await narrator.for_incident(incident, "engineer")
            assert failed.reason == "server"
            clock.advance(2)
        assert len(fake_openai.completions) == 5
        assert narrator.breaker.state == "open"
        assert metric(narrator, "alertpilot_narrative_breaker_open") == 1

        fake_openai.outage(False)
        blocked = await narrator.for_incident(incident, "engineer")
        assert (blocked.source, blocked.reason) == ("template", "breaker_open")
        assert len(fake_openai.completions) == 5  # the provider was not called
        assert metric(narrator, "alertpilot_narrative_errors_total", {"type": "breaker_open"}) == 1

        clock.advance(61)  # cool-down over: one trial call closes it again
        healed = await narrator.for_incident(incident, "engineer")
    assert healed.source == "llm"
    assert len(fake_openai.completions) == 6
    assert narrator.breaker.state == "closed"
    assert metric(narrator, "alertpilot_narrative_breaker_open") == 0


async def test_errors_spread_beyond_the_window_do_not_open_the_breaker(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.outage(True)
    async with narrator_for(tmp_path, fake_openai, max_attempts=1, breaker_window=30) as (
        narrator,
        store,
        clock,
    ):
        incident = await open_incident(store, clock, group())
        for _ in range(6):
            await narrator.for_incident(incident, "engineer")
            clock.advance(10)  # at most three errors in any 30 s
    assert narrator.breaker.state == "closed"
    assert len(fake_openai.completions) == 6
