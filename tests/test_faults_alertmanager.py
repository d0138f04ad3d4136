"""Alertmanager down while a silence is being created, in front of a real Alertmanager
(``FaultProxy`` breaks the path). The webhook answers at once; a silence step that
cannot reach Alertmanager fails with a clear error on the timeline and escalates; one
whose answer was lost on the way back makes exactly one silence, which alertpilot knows
and expires on resolve; /metrics counts the failed step while /readyz stays ready."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.incidents import EventKind
from bot.remediation.records import StepState
from faultkit import FaultProxy, ack, readyz, scrape, until
from remediation_kit import Harness, group, playbook, start
from stack import Alertmanager

pytestmark = pytest.mark.integration

LABELS = {"alertname": "CacheDown", "service": "cart"}
STEP = {
    "name": "silence-noise",
    "mode": "auto",
    "action": {
        "kind": "silence",
        "matchers": ['alertname="CacheDown"', "service={{ labels.service | quote }}"],
        "duration": "2h",
        "comment": "cache restarts on {{ labels.service }}",
    },
}


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[tuple[Alertmanager, FaultProxy]]:
    async with (
        Alertmanager(tmp_path, "http://127.0.0.1:9/unused") as am,
        FaultProxy(f"127.0.0.1:{am.port}") as proxy,
    ):
        yield am, proxy


async def harness(aiohttp_client: Any, tmp_path: Path, proxy: FaultProxy) -> Harness:
    return await start(
        aiohttp_client, tmp_path, [playbook(STEP)],
        alertmanager={"url": proxy.url, "timeout": 2}, remediation={"mode": "auto"},
    )  # fmt: skip


async def test_alertmanager_down_fails_the_step_clearly_and_escalates(
    aiohttp_client: Any, tmp_path: Path, alertmanager: tuple[Alertmanager, FaultProxy]
) -> None:
    am, proxy = alertmanager
    await proxy.down()
    h = await harness(aiohttp_client, tmp_path, proxy)
    await ack(h.client, group(LABELS))
    incident_id = await h.fire(LABELS)
    step = await h.wait_step(incident_id, "silence-noise", {StepState.FAILED})
    assert step.reason is not None
    assert step.reason.startswith(f"Alertmanager unavailable: POST {proxy.url}/api/v2/silences: ")

    events = await h.remediation_events(incident_id, "silence-noise")
    assert events[-1].message == f"silence-noise: failed: {step.reason}"
    escalated = await until(
        lambda: h.events(incident_id, EventKind.ESCALATED), what="the escalation"
    )
    assert "remediation silence-noise failed: Alertmanager unavailable" in escalated[0].message
    metrics = await scrape(h.client)
    assert metrics.value("alertpilot_remediations_total", kind="silence", status="failed") == 1
    assert (await readyz(h.client))[0] == 200
    assert await am.silences() == []


async def test_a_lost_answer_makes_one_silence_that_is_expired_on_resolve(
    aiohttp_client: Any, tmp_path: Path, alertmanager: tuple[Alertmanager, FaultProxy]
) -> None:
    am, proxy = alertmanager
    h = await harness(aiohttp_client, tmp_path, proxy)
    proxy.cut_reply()  # Alertmanager makes the silence; its answer never arrives
    await ack(h.client, group(LABELS))
    incident_id = await h.fire(LABELS)
    step = await h.wait_step(incident_id, "silence-noise", {StepState.SUCCEEDED})
    assert proxy.cut == 1
    assert step.result is not None and step.result.silence_id
    silences = await am.silences()
    assert [s["id"] for s in silences] == [step.result.silence_id]  # one, and it is known

    await h.post(group(LABELS, status="resolved"))

    async def expired() -> bool:
        return all(s["status"]["state"] == "expired" for s in await am.silences())

    await until(expired, what="the silence expired on resolve")
