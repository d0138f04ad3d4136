"""POST /api/v1/narratives: answer shape, 400s, the per-client rate limit, auth, 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.core.clock import ManualClock
from conftest import API, FIXTURES, JSON
from fakes import FakeOpenAI
from narrative_support import app_settings, group, post_alerts, running_app, until_quiet

RCA: dict[str, Any] = {
    "impact": {
        "service": "checkout",
        "metric": "http_error_ratio",
        "severity": "critical",
        "timeWindow": {"start": "2026-11-21T05:10:00Z", "end": "2026-11-21T05:40:00Z"},
    },
    "rootCause": {
        "service": "payments-db",
        "component": "connection-pool",
        "evidence": ["pool at 100% from 05:09", "p95 query time 4.2s (normal 0.1s)"],
    },
    "chains": [
        {"steps": [{"service": "frontend", "kpiName": "latency_p95", "suspicionScore": 0.41}]},
        [
            {"service": "payments-db", "kpiName": "pool_in_use", "suspicionScore": 0.93},
            {"service": "payments", "kpiName": "error_rate", "suspicionScore": 0.81},
            {"service": "checkout", "kpiName": "http_error_ratio", "suspicionScore": 0.77},
        ],
    ],
    "diagnostics": {"timeRings": {"R1_IMMEDIATE": ["pool_in_use"], "R2_SHORT": ["error_rate"]}},
}
TOKEN = "api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


async def ask(
    client: TestClient, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST it as JSON, with the test token unless ``headers`` says otherwise."""
    sent = {**JSON, **(API if headers is None else headers)}
    if isinstance(body, str | bytes):
        response = await client.post("/api/v1/narratives", data=body, headers=sent)
    else:
        response = await client.post("/api/v1/narratives", json=body, headers=sent)
    headers = dict(response.headers)
    for name in RATE_HEADERS:
        assert name in headers, f"{name} missing on a {response.status}"
    return response.status, headers, await response.json()


async def test_explains_an_rca_document_with_the_template(tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_app(app_settings(tmp_path, None), clock) as client:
        status, headers, body = await ask(client, {"rcaData": RCA})
        _, _, plain = await ask(client, {"rcaData": RCA, "audience": "stakeholder"})
    assert status == 200
    assert body["status"] == "success"
    data = body["data"]
    assert set(data) == {
        "explanation", "tokensUsed", "provider", "model", "generatedAt", "cached",
        "generationTimeMs",
    }  # fmt: skip
    assert data["provider"] == "template" and data["model"] is None
    assert data["tokensUsed"] == 0 and data["cached"] is False
    assert data["generatedAt"] == "2027-01-15T08:00:00+00:00"
    assert isinstance(data["generationTimeMs"], int)
    text = data["explanation"]
    assert "payments-db / connection-pool" in text
    # The most suspicious chain leads, whatever the order it was posted in.
    assert "payments-db:pool_in_use(0.93) -> payments:error_rate(0.81)" in text
    assert headers["X-RateLimit-Limit"] == "10" and headers["X-RateLimit-Remaining"] == "9"
    stakeholder = plain["data"]["explanation"]
    assert "pool_in_use" not in stakeholder and "payments-db" in stakeholder


async def test_explains_an_incident_with_the_llm_then_from_the_cache(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "HighErrorRate is firing on checkout; check the recent deploys first."
    async with running_app(app_settings(tmp_path, fake_openai), ManualClock()) as client:
        incident_id = await post_alerts(client, group())
        await until_quiet(client, incident_id)
        status, _, first = await ask(client, {"incidentId": str(incident_id)})
        _, _, second = await ask(client, {"incidentId": incident_id})
    assert status == 200
    assert first["data"]["explanation"] == fake_openai.reply
    assert first["data"]["provider"] == "openai" and first["data"]["model"] == "gpt-4o-mini"
    assert first["data"]["tokensUsed"] > 0 and first["data"]["cached"] is False
    assert second["data"]["cached"] is True and second["data"]["tokensUsed"] == 0
    assert second["data"]["explanation"] == fake_openai.reply
    assert len(fake_openai.completions) == 1


async def test_rca_prompt_sends_the_document_to_the_model(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with running_app(app_settings(tmp_path, fake_openai), ManualClock()) as client:
        status, _, body = await ask(client, {"rcaData": RCA, "audience": "stakeholder"})
    assert status == 200 and body["data"]["provider"] == "openai"
    user = fake_openai.completions[0]["messages"][1]["content"]
    assert "root-cause analysis" in user and "stakeholder" in user
    assert "payments-db:pool_in_use(0.93)" in user and "R1_IMMEDIATE" in user


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ({}, "exactly one of"),
        ({"incidentId": 1, "rcaData": RCA}, "exactly one of"),
        ({"incidentId": "one"}, "positive integer"),
        ({"incidentId": True}, "positive integer"),
        ({"incidentId": 1, "audience": "ceo"}, "audience"),
        ({"incidentId": 1, "extra": 1}, "unknown field"),
        ({"rcaData": "checkout broke"}, "rcaData"),
        ({"rcaData": {"rootCause": {"service": "db"}}}, "rcaData.impact"),
        (
            {"rcaData": {**RCA, "chains": [{"steps": [{"suspicionScore": "very"}]}]}},
            "rcaData.chains.0.steps.0.suspicionScore",
        ),
        ('{"incidentId": NaN}', "not JSON"),  # Python's json reads it; JSON has no NaN
        ('{"rcaData": {"impact": {"service": "db", "severity": Infinity}}}', "not JSON"),
        (
            {"rcaData": {**RCA, "chains": [{"steps": [{"suspicionScore": 1e308}]}]}},
            "rcaData.chains.0.steps.0.suspicionScore",
        ),
    ],
)
async def test_bad_bodies_get_400_invalid_json_payload(tmp_path: Path, body: Any, why: str) -> None:
    async with running_app(app_settings(tmp_path, None), ManualClock()) as client:
        status, _, answer = await ask(client, body)
    assert status == 400
    assert answer["status"] == "error" and answer["error"] == "invalid_json_payload"
    assert why in answer["message"]


async def test_unknown_incident_is_404(tmp_path: Path) -> None:
    async with running_app(app_settings(tmp_path, None), ManualClock()) as client:
        status, _, answer = await ask(client, {"incidentId": 999})
    assert (status, answer["error"]) == (404, "not_found")


async def test_rate_limit_per_client_with_headers_and_retry_after(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = app_settings(tmp_path, None, llm={"api_rate_limit": 3, "api_rate_window": 60})
    async with running_app(settings, clock) as client:
        remaining = []
        for _ in range(3):
            status, headers, _ = await ask(client, {"rcaData": RCA})
            assert status == 200
            remaining.append(headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        assert headers["X-RateLimit-Reset"] == str(int(clock.now()) + 60)

        clock.advance(20)
        status, headers, answer = await ask(client, {"rcaData": RCA})
        assert status == 429
        assert answer["error"] == "rate_limit_exceeded" and answer["retryAfter"] == 40
        assert headers["Retry-After"] == "40" and headers["X-RateLimit-Remaining"] == "0"
        bad_status, bad_headers, _ = await ask(client, "{oops")  # refused before parsing
        assert bad_status == 429 and "Retry-After" in bad_headers

        clock.advance(41)  # a new window
        status, headers, _ = await ask(client, {"rcaData": RCA})
    assert status == 200 and headers["X-RateLimit-Remaining"] == "2"
    assert "Retry-After" not in headers


async def test_api_token_protects_it_and_keys_the_limit(tmp_path: Path) -> None:
    settings = app_settings(tmp_path, None, server={"api_token": TOKEN}, llm={"api_rate_limit": 2})
    async with running_app(settings, ManualClock()) as client:
        for _ in range(2):
            status, headers, answer = await ask(client, {"rcaData": RCA})
            assert (status, answer["error"]) == (401, "unauthorized")
            assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await ask(client, {"rcaData": RCA})
        assert status == 429  # the anonymous caller's window is used up...
        status, headers, _ = await ask(client, {"rcaData": RCA}, headers=AUTH)
    assert status == 200  # ...the token holder has a window of its own
    assert headers["X-RateLimit-Remaining"] == "1"


async def test_a_broken_template_is_500_generation_failed(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "narrative_rca.md.j2").write_text("{{ doc.impact.no_such_field }}\n")
    settings = app_settings(tmp_path, None, llm={"prompts_dir": str(prompts)})
    async with running_app(settings, ManualClock()) as client:
        status, _, answer = await ask(client, {"rcaData": RCA})
    assert status == 500
    assert answer == {
        "status": "error",
        "error": "generation_failed",
        "message": "the narrative could not be generated",
    }


# the RCA explanation service's contract ---------------------------------------------

RCA_REQUEST = json.loads((FIXTURES / "rca" / "rca-analyze-request.json").read_text())


async def analyze(client: TestClient, body: Any) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    response = await client.post("/api/v1/mira/rca_analyze", data=data, headers={**JSON, **API})
    headers = dict(response.headers)
    for name in RATE_HEADERS:
        assert name in headers, f"{name} missing on a {response.status}"
    return response.status, headers, await response.json()


async def test_rca_analyze_takes_the_rca_apis_response_as_it_is(tmp_path: Path) -> None:
    async with running_app(app_settings(tmp_path, None), ManualClock()) as client:
        status, _, body = await analyze(client, RCA_REQUEST)
        _, _, technical = await analyze(client, {**RCA_REQUEST, "audience": "engineer"})
    assert status == 200 and body["status"] == "success"
    assert set(body["data"]) == {
        "explanation", "tokensUsed", "provider", "model", "generatedAt", "cached",
        "generationTimeMs",
    }  # fmt: skip
    plain = body["data"]["explanation"]  # non-technical by default, as the contract says
    assert "payments-db" in plain and "pool_in_use" not in plain
    assert "checkout" in plain
    engineer = technical["data"]["explanation"]
    assert "payments-db:pool_in_use(0.93) -> payments:error_rate(0.81)" in engineer
    assert "2026-11-21 05:10:00" in engineer  # timeStartStr is the window's start


@pytest.mark.parametrize(
    "body",
    ["{oops", {"incidentId": 1}, {"rcaData": {"status": "success", "data": {}}}],
    ids=["not json", "no rcaData", "no impact"],
)
async def test_rca_analyze_errors_in_the_contracts_shape(tmp_path: Path, body: Any) -> None:
    async with running_app(app_settings(tmp_path, None), ManualClock()) as client:
        status, _, answer = await analyze(client, body)
    assert status == 400
    assert (answer["status"], answer["error"]) == ("error", "invalid_json_payload")


async def test_rca_analyze_failure_is_mira_generation_failed(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "narrative_rca.md.j2").write_text("{{ doc.impact.no_such_field }}\n")
    settings = app_settings(tmp_path, None, llm={"prompts_dir": str(prompts)})
    async with running_app(settings, ManualClock()) as client:
        status, _, answer = await analyze(client, RCA_REQUEST)
    assert (status, answer["error"]) == (500, "mira_generation_failed")


async def test_rca_analyze_is_rate_limited_with_retry_after(tmp_path: Path) -> None:
    settings = app_settings(tmp_path, None, llm={"api_rate_limit": 1, "api_rate_window": 60})
    async with running_app(settings, ManualClock()) as client:
        assert (await analyze(client, RCA_REQUEST))[0] == 200
        status, headers, answer = await analyze(client, RCA_REQUEST)
    assert status == 429 and answer["retryAfter"] == 60 and headers["Retry-After"] == "60"


async def test_a_body_a_browser_page_can_send_unasked_is_415_with_the_limit_headers(
    tmp_path: Path,
) -> None:
    async with running_app(app_settings(tmp_path, None), ManualClock()) as client:
        for kind in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {**API, **({"Content-Type": kind} if kind else {})}
            response = await client.post(
                "/api/v1/narratives", data=json.dumps({"rcaData": RCA}).encode(), headers=headers
            )
            assert response.status == 415, kind
            assert (await response.json())["error"] == "unsupported_media_type"
            assert all(name in response.headers for name in RATE_HEADERS)
