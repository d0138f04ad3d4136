"""Prometheus down or slow, in front of a real Prometheus (``FaultProxy`` breaks the
path). The webhook answers at once even while a query hangs; the diagnostic becomes an
error result that says what happened; the incident goes on (narrative, notifications);
/metrics counts the failed diagnostics while /readyz stays ready; and once Prometheus
answers again a re-run gets the real value."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.core.incidents import EventKind, Incident
from faultkit import FaultProxy, ack, alert_group, readyz, scrape, until
from remediation_kit import Harness, start
from stack import Prometheus

pytestmark = pytest.mark.integration

STEP_TIMEOUT = 1.0
PLAYBOOK = {
    "name": "checkout-errors",
    "match": ['alertname=~"Fault.*"'],
    "diagnostics": [
        {
            "name": "error_share",
            "kind": "promql",
            "label": "5xx share",
            "unit": "ratio",
            # A constant, evaluated by the real Prometheus: these tests are about reaching it,
            # and waiting for a first scrape would cost its ~5 s discovery round.
            "query": "vector(0.123)",
            "expect": "< 0.05",
            "timeout": STEP_TIMEOUT,
        }
    ],
}


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[FaultProxy]:
    """A real Prometheus behind a FaultProxy."""
    async with (
        Prometheus(tmp_path) as prom,
        FaultProxy(f"127.0.0.1:{prom.port}") as proxy,
    ):
        yield proxy


async def diagnosed(h: Harness, incident_id: int) -> Incident:
    async def done() -> Incident | None:
        if not await h.store.list_incidents():
            return None
        incident = await h.incident(incident_id)
        kinds = [e.kind for e in incident.timeline]
        return incident if EventKind.DIAGNOSTICS_DONE in kinds else None

    found: Incident = await until(done, what="diagnostics.done")
    return found


@pytest.mark.parametrize("fault", ["down", "slow"])
async def test_prometheus_fault_is_an_error_result_and_a_rerun_heals_it(
    aiohttp_client: Any, tmp_path: Path, prometheus: FaultProxy, fault: str
) -> None:
    if fault == "down":
        await prometheus.down()
    else:
        prometheus.stall()
    h = await start(
        aiohttp_client, tmp_path, [PLAYBOOK],
        prometheus={"url": prometheus.url, "timeout": 2, "retries": 1},
    )  # fmt: skip
    await ack(h.client, alert_group(1))
    if fault == "slow":  # the query is in flight, and hangs: the webhook does not wait
        await until(lambda: asyncio.sleep(0, prometheus.connections), what="the query")
        await ack(h.client, alert_group(2))

    incident = await diagnosed(h, 1)
    [result] = [e for e in incident.timeline if e.kind == EventKind.DIAGNOSTIC]
    assert result.data["status"] == "error"
    if fault == "down":
        assert result.data["error"].startswith("Prometheus unavailable: ")
        assert "Cannot connect" in result.data["error"] or "refused" in result.data["error"]
    else:
        assert "timed out" in result.data["error"]
    assert result.message.startswith("5xx share: error: ")
    [done] = [e for e in incident.timeline if e.kind == EventKind.DIAGNOSTICS_DONE]
    why = "unreachable" if fault == "down" else "did not answer in time"
    assert done.message == f"diagnostics: Prometheus {why}: checks not run (1 of 1)"
    cause = "unreachable" if fault == "down" else "timeout"
    assert (result.data["cause"], result.data["upstream"]) == (cause, "Prometheus")
    # The incident goes on: narrated and notified as usual.
    assert incident.data["narrative"]["source"] == "template"
    assert incident.data["diagnostics"][0]["status"] == "error"

    metrics = await scrape(h.client)
    assert metrics.value("alertpilot_diagnostics_total", kind="promql", status="error") >= 1
    status, body = await readyz(h.client)
    assert status == 200 and body["status"] == "ready"

    await prometheus.up()  # Prometheus is back
    rerun = await h.app[keys.PIPELINE].rerun_diagnostics(1, "@ada (U0ADA)")
    assert [r.status.value for r in rerun.results] == ["ok"]
    assert rerun.results[0].value == pytest.approx(0.123)
    assert rerun.message == "1 failed (error_share)"
    timeline = (await h.incident(1)).timeline
    assert [e.message for e in timeline if e.kind == EventKind.DIAGNOSTICS_DONE][-1] == (
        "diagnostics re-run by @ada (U0ADA): 1 failed (error_share)"
    )
    metrics = await scrape(h.client)
    assert metrics.value("alertpilot_diagnostics_total", kind="promql", status="ok") == 1
