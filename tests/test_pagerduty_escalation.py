"""The escalation policy, timed with a ManualClock: immediately, if_unacked, never, the
Escalate button, playbook rules, a raised severity, and the timer across a restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from bot.core.alerts import parse_group
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Status
from bot.core.transitions import IncidentActions
from bot.pagerduty.feature import build
from bot.playbook.model import Playbook
from bot.runtime.jobs import JobHandlers
from bot.runtime.metrics import Metrics
from bot.runtime.worker import JobRunner
from bot.settings import Severity
from bot.store.base import Job
from bot.store.sqlite import SqliteStore
from conftest import make_settings
from fakes import FakePagerDuty
from pagerduty_kit import alert_group, pd_section, start_bot


async def test_p1_pages_only_after_five_unacknowledged_minutes(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="error"))
    await bot.settle()
    incident = await bot.incident()
    assert incident.severity is Severity.P1
    state = incident.data["pagerduty"]
    assert (state["policy"], state["policy_after"], state["escalation"]) == (
        "if_unacked",
        300.0,
        "scheduled",
    )
    assert state["escalate_at"] == incident.opened_at + 300
    await bot.advance(299)
    assert fake_pagerduty.requests == []
    await bot.advance(1)
    assert bot.actions_sent() == [("trigger", incident.key)]
    [page] = await bot.pages(incident.id)
    assert page.data["reason"] == "not acknowledged within 5m (default for P1)"


async def test_p1_acknowledged_in_slack_before_five_minutes_never_pages(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="error"))
    await bot.settle()
    incident = await bot.incident()
    await bot.advance(120)
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.advance(180)
    await bot.advance(3600)
    assert fake_pagerduty.requests == []
    state = (await bot.incident()).data["pagerduty"]
    assert state["escalation"] == "not_paged"
    assert state["note"] == "acknowledged by ada before the page was due"
    [skipped] = await bot.pages(incident.id)
    assert skipped.data["outcome"] == "skipped"


async def test_p1_acknowledged_then_withdrawn_still_pages_on_time(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="error"))
    await bot.settle()
    incident = await bot.incident()
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.advance(60)
    await bot.actions.unacknowledge(incident.id, actor="ada", source="slack")
    await bot.advance(239)
    assert fake_pagerduty.events == []
    await bot.advance(1)
    assert bot.actions_sent() == [("trigger", incident.key)]


async def test_an_ack_withdrawn_after_the_due_time_starts_the_wait_again(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="error"))
    await bot.settle()
    incident = await bot.incident()
    await bot.advance(60)
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.advance(540)  # the 5-minute timer fired and found it acknowledged
    assert (await bot.incident()).data["pagerduty"]["escalation"] == "not_paged"
    await bot.actions.unacknowledge(incident.id, actor="ada", source="slack")
    await bot.advance(299)
    assert fake_pagerduty.events == []
    await bot.advance(1)
    assert bot.actions_sent() == [("trigger", incident.key)]


async def test_p0_pages_at_once(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    incident = await bot.incident()
    assert bot.actions_sent() == [("trigger", incident.key)]
    assert fake_pagerduty.events[0]["payload"]["severity"] == "critical"
    state = incident.data["pagerduty"]
    assert (state["policy"], state["policy_source"]) == ("immediately", "default for P0")


@pytest.mark.parametrize("source", ["slack", "alertpilot"])
async def test_p2_never_pages_until_escalated(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty, source: Any
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="warning"))
    await bot.advance(7200)
    assert fake_pagerduty.requests == []
    incident = await bot.incident()
    # the Escalate button (slack) or a remediation whose verify failed (alertpilot)
    await bot.actions.escalate(incident.id, actor="ada", source=source, reason="verify failed")
    await bot.settle()
    assert bot.actions_sent() == [("trigger", incident.key)]
    [page] = await bot.pages(incident.id)
    assert page.data["reason"] == "escalated: verify failed (by ada)"
    assert fake_pagerduty.events[0]["payload"]["severity"] == "warning"


async def test_the_playbook_rule_wins_over_the_default(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    playbooks = [
        Playbook.model_validate(
            {
                "name": "checkout",
                "match": ['alertname="CheckoutErrors"'],
                "escalation": {"by_severity": {"P2": "if_unacked 1m"}},
                "links": [{"title": "Dashboard", "url": "https://grafana.example/d/checkout"}],
            }
        ),
        Playbook.model_validate(
            {"name": "quiet", "match": ['alertname="Batch"'], "escalation": {"page": "never"}}
        ),
    ]
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, ManualClock(), playbooks=playbooks
    )
    await bot.post_alert(alert_group("CheckoutErrors", severity="warning"))
    await bot.post_alert(alert_group("Batch", severity="critical", fingerprint="fp000009"))
    await bot.settle()
    checkout = next(i for i in await bot.store.list_incidents() if i.playbook == "checkout")
    batch = next(i for i in await bot.store.list_incidents() if i.playbook == "quiet")
    assert batch.data["pagerduty"]["policy_source"] == "playbook quiet, P0"
    await bot.advance(59)
    assert fake_pagerduty.events == []
    await bot.advance(1)
    assert bot.actions_sent() == [("trigger", checkout.key)]
    links = {link["text"]: link["href"] for link in fake_pagerduty.events[0]["links"]}
    assert links["Dashboard"] == "https://grafana.example/d/checkout"
    await bot.advance(3600)
    assert len(fake_pagerduty.events) == 1  # the P0 of the "never" playbook stays quiet


async def test_a_raised_severity_pages_sooner(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="warning"))
    await bot.advance(600)
    assert fake_pagerduty.events == []
    worse = alert_group(severity="critical", fingerprint="fp000002")
    await bot.post_alert(worse)
    await bot.settle()
    incident = await bot.incident()
    assert incident.severity is Severity.P0
    assert bot.actions_sent() == [("trigger", incident.key)]
    assert incident.data["pagerduty"]["policy_source"] == "default for P0, severity raised"


async def test_the_escalation_timer_survives_a_restart(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    clock = ManualClock()
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    await bot.post_alert(alert_group(severity="error"))
    await bot.settle()
    await bot.advance(120)
    await bot.client.close()
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    await bot.advance(179)
    assert fake_pagerduty.events == []
    await bot.advance(1)
    incident = await bot.incident()
    assert bot.actions_sent() == [("trigger", incident.key)]


async def test_a_resolved_incident_is_not_paged_when_its_timer_fires(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="error"))
    await bot.settle()
    await bot.advance(60)
    await bot.post_alert(alert_group(severity="error", status="resolved"))
    await bot.advance(600)
    incident = await bot.incident()
    assert incident.status is Status.RESOLVED
    assert fake_pagerduty.requests == []
    assert incident.data["pagerduty"]["note"] == "resolved before the page was due"


# -- a pipeline that never records playbook.matched ------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_silent_pipeline_delays_the_page_but_never_loses_it(
    tmp_path: Path, fake_pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    """Wired by hand: a ``pipeline`` subscriber that records nothing stands for a broken one."""
    clock = ManualClock()
    settings = make_settings(tmp_path, pagerduty=pd_section(fake_pagerduty))
    assert settings.pagerduty is not None
    store = SqliteStore(settings.store.sqlite_path, clock=clock.now)
    handlers = JobHandlers()

    async def silent_pipeline(job: Job) -> None:
        return None

    handlers.register("pipeline", silent_pipeline, subscribe=True)
    feature = build(
        settings.pagerduty,
        store=store,
        clock=clock,
        actions=IncidentActions(store, clock),
        registry=CollectorRegistry(),
        http=lambda: session,
        alertmanager=lambda: pytest.fail("no silences here"),
        playbooks=lambda: None,
        pipeline_registered=lambda: "pipeline" in handlers.kinds,
    )
    feature.register(handlers)
    store.subscribers = handlers.subscribers
    runner = JobRunner(store, store.job_signal, handlers, settings.workers, Metrics(), clock)
    await store.open()
    try:
        body = json.dumps(alert_group(severity="critical"))
        inbox_id = await store.enqueue_payload("alertmanager", body)
        result = await store.apply_group(inbox_id, parse_group(body), Severity.P0, clock.now())
        assert result.incident_id is not None
        await runner.run_due()
        assert fake_pagerduty.requests == []
        clock.advance(59)
        await runner.run_due()
        assert fake_pagerduty.requests == []
        clock.advance(1)  # pagerduty.decision_timeout: 60 s
        await runner.run_due()
        incident = await store.get_incident(result.incident_id)
        assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]
        assert incident.data["pagerduty"]["policy_source"] == "default for P0"
        assert [e.kind for e in incident.timeline if e.kind == EventKind.PAGE] == ["page"]
    finally:
        await store.close()
