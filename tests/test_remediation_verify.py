"""Verify against a real Prometheus scraping a metric the test controls: recovery is
verified; a metric that stays bad fails the step, escalates and runs the rollback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.incidents import EventKind
from bot.remediation.records import RollbackState, StepState, VerifyState
from remediation_kit import Harness, Received, Receiver, playbook, start
from stack import MetricsExporter, Prometheus

pytestmark = pytest.mark.integration

METRIC = "llm_provider_error_ratio"


@pytest.fixture
async def exporter() -> AsyncIterator[MetricsExporter]:
    async with MetricsExporter() as server:
        server.set(METRIC, 0.4, {"service": "chat"})
        yield server


@pytest.fixture
async def prometheus(tmp_path: Path, exporter: MetricsExporter) -> AsyncIterator[Prometheus]:
    async with Prometheus(tmp_path, scrape_targets=[exporter.target]) as prom:
        await prom.wait_for(METRIC, lambda data: bool(data["result"]), timeout=20)
        yield prom


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def harness(
    aiohttp_client: Any, tmp_path: Path, prometheus: Prometheus, receiver: Receiver
) -> Harness:
    step = {
        "name": "failover",
        "mode": "auto",
        "action": {
            "kind": "webhook",
            "url": f"{receiver.url}/llm/failover",
            "body": {"service": "{{ labels.service }}", "provider": "secondary"},
        },
        "verify": {
            "query": f"max({METRIC}{{service={{{{ labels.service | promql }}}}}})",
            "expect": "< 0.05",
            "within": "4s",
            "interval": "0.5s",
        },
        "rollback": {
            "kind": "webhook",
            "url": f"{receiver.url}/llm/rollback",
            "body": {"service": "{{ labels.service }}", "provider": "primary"},
        },
    }
    return await start(
        aiohttp_client,
        tmp_path,
        [playbook(step, alertname="LLMProviderErrors")],
        prometheus={"url": prometheus.url},
        remediation={"mode": "auto", "allowed_urls": [f"{receiver.url}/llm"]},
    )


async def test_metric_recovers_and_the_step_is_verified(
    aiohttp_client: Any,
    tmp_path: Path,
    prometheus: Prometheus,
    exporter: MetricsExporter,
    receiver: Receiver,
) -> None:
    def fix(request: Received) -> None:  # the failover works: errors drop
        exporter.set(METRIC, 0.01, {"service": "chat"})

    receiver.on_request = fix
    h = await harness(aiohttp_client, tmp_path, prometheus, receiver)
    incident_id = await h.fire({"alertname": "LLMProviderErrors", "service": "chat"})
    record = await h.wait_step(incident_id, "failover", {StepState.VERIFIED, StepState.FAILED})
    assert record.state is StepState.VERIFIED
    assert record.verify is not None
    assert record.verify.state is VerifyState.HELD
    assert record.verify.query == f'max({METRIC}{{service="chat"}})'
    assert record.verify.last_value == pytest.approx(0.01)
    assert [(r.path, r.body) for r in receiver.received] == [
        ("/llm/failover", {"service": "chat", "provider": "secondary"})
    ]
    assert await h.events(incident_id, EventKind.ESCALATED) == []
    [verified] = [
        e
        for e in await h.remediation_events(incident_id, "failover")
        if e.data["state"] == "verified"
    ]
    assert "= 0.01 (< 0.05)" in verified.message


async def test_metric_stays_bad_so_the_step_fails_escalates_and_rolls_back(
    aiohttp_client: Any,
    tmp_path: Path,
    prometheus: Prometheus,
    receiver: Receiver,
) -> None:
    h = await harness(aiohttp_client, tmp_path, prometheus, receiver)
    incident_id = await h.fire({"alertname": "LLMProviderErrors", "service": "chat"})
    record = await h.wait_step(incident_id, "failover", {StepState.VERIFIED, StepState.FAILED})
    assert record.state is StepState.FAILED
    assert record.verify is not None
    assert record.verify.state is VerifyState.FAILED
    assert record.verify.checks >= 3  # it kept checking until the deadline
    assert record.verify.last_value == pytest.approx(0.4)
    assert "did not hold within 4s (last value 0.4)" in record.reason
    [escalated] = await h.events(incident_id, EventKind.ESCALATED)
    assert escalated.data["step"] == "failover"
    assert escalated.data["remediation"] == "verify_failed"
    for _ in range(100):
        record = await h.step(incident_id, "failover")
        if record.rollback and record.rollback.state is RollbackState.SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    assert record.rollback is not None and record.rollback.state is RollbackState.SUCCEEDED
    assert [(r.path, r.body["provider"]) for r in receiver.received] == [
        ("/llm/failover", "secondary"),
        ("/llm/rollback", "primary"),
    ]
    states = [e.data["state"] for e in await h.remediation_events(incident_id, "failover")]
    assert states[:4] == ["queued", "running", "verifying", "failed"]
    rollbacks = [
        e.data["rollback"]
        for e in await h.remediation_events(incident_id, "failover")
        if "rollback" in e.data
    ]
    assert rollbacks == ["running", "succeeded"]
