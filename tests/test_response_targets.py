"""Acknowledgement and resolution targets, through the real edges: Alertmanager posts to
the app, PagerDuty's Events and REST APIs and Slack's Web API are loopback fakes, time
is a ManualClock. What is asserted is what went out (PagerDuty events and REST calls,
Slack posts) and what the timeline holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot import keys
from bot.core.incidents import EventKind, Status
from bot.playbook.model import Playbook
from fakes import FakePagerDuty, FakeSlack
from faultkit import scrape
from pagerduty_kit import alert_group
from responsekit import START, start_bot

FIVE_MINUTES = 300.0


async def test_an_unacknowledged_p0_goes_one_level_up_at_five_minutes_once(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, pd={"from_email": "ops@example.com"}
    )
    fake_pagerduty.require_from = True  # an account-level token: PUT needs From
    await bot.post_alert(alert_group(severity="critical"))
    incident = await bot.incident()
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]  # P0: at once
    assert "Acknowledge by" in bot.message(incident)

    await bot.at(FIVE_MINUTES - 1)
    assert fake_pagerduty.escalations == []
    await bot.at(FIVE_MINUTES)
    [pd_incident] = fake_pagerduty.incidents()
    assert fake_pagerduty.escalations == [
        {"id": pd_incident["id"], "level": 2, "from": "ops@example.com"}
    ]
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]  # no re-page

    [escalated] = await bot.events(EventKind.ESCALATED)
    assert escalated.data["level"] == 2
    assert escalated.message == "escalated to level 2: not acknowledged within 5m (default for P0)"
    pages = [e.message for e in await bot.events(EventKind.PAGE)]
    assert pages[-1].startswith("escalated PagerDuty's incident 1 to level 2 (REST API)")
    incident = await bot.incident()
    thread = bot.thread(incident)
    assert ":rotating_light: escalated to level 2: not acknowledged within 5m" in "\n".join(thread)
    assert any("to level 2 (REST API)" in text for text in thread)
    assert "Escalated to level 2" in bot.message(incident)  # the message header says so

    await bot.at(FIVE_MINUTES + 60)
    await bot.press("ap_ack")  # acknowledged in Slack: no further level
    await bot.at(4 * 3600 - 1)
    assert len(fake_pagerduty.escalations) == 1
    assert len(await bot.events(EventKind.ESCALATED)) == 1
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger", "acknowledge"]
    state = (await bot.incident()).data["targets"]
    assert (state["level"], state["ack_due"], state["timers"].keys()) == (
        2,
        None,
        {"resolve"},
    )
    jobs = await bot.store.stats()
    # waiting: the resolve target and the next status-update reminder; no level timer
    assert jobs.jobs_pending == 0 and jobs.jobs_scheduled == 2


async def test_each_level_once_up_to_max_level(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    await bot.post_alert(alert_group(severity="critical"))
    await bot.at(2 * FIVE_MINUTES)
    await bot.at(3600)
    assert [e["level"] for e in fake_pagerduty.escalations] == [2, 3]  # max_level 3
    levels = [e.data["level"] for e in await bot.events(EventKind.ESCALATED)]
    assert levels == [2, 3]


async def test_an_unacknowledged_p1_pages_at_5_minutes_and_escalates_at_15(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    await bot.post_alert(alert_group(severity="error"))
    await bot.at(FIVE_MINUTES)
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]
    await bot.at(15 * 60 - 1)
    assert fake_pagerduty.escalations == []
    await bot.at(15 * 60)
    assert [e["level"] for e in fake_pagerduty.escalations] == [2]
    [escalated] = await bot.events(EventKind.ESCALATED)
    assert escalated.data["reason"] == "not acknowledged within 15m (default for P1)"


async def test_without_a_rest_token_the_next_level_is_a_clearly_named_re_page(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, pd={"api_token": ""}
    )
    await bot.post_alert(alert_group(severity="error"))
    incident = await bot.incident()
    await bot.at(15 * 60)
    page, repage = fake_pagerduty.events
    assert page["dedup_key"] == incident.key and page["payload"]["severity"] == "error"
    assert repage["event_action"] == "trigger"
    assert repage["dedup_key"] == f"{incident.key}-L2"  # a new PagerDuty alert
    assert repage["payload"]["severity"] == "critical"  # raised one step
    assert repage["payload"]["summary"].startswith("[RE-PAGE level 2] [P1] CheckoutErrors")
    assert repage["payload"]["custom_details"]["repage"]["why"] == (
        "not acknowledged within 15m (default for P1)"
    )
    assert fake_pagerduty.requests_to("/incidents") == []  # no REST API without a token
    thread = "\n".join(bot.thread(await bot.incident()))
    assert f"re-paged PagerDuty for level 2 (critical, a new alert {incident.key}-L2)" in thread

    await bot.press("ap_ack")  # the acknowledgement reaches both alerts
    await bot.at(3600)
    sent = [(e["event_action"], e["dedup_key"]) for e in fake_pagerduty.events[2:]]
    assert sorted(sent) == [
        ("acknowledge", incident.key),
        ("acknowledge", f"{incident.key}-L2"),
    ]
    await bot.actions.resolve(incident.id, actor="ada", source="slack")
    await bot.settle()
    resolved = [e["dedup_key"] for e in fake_pagerduty.events if e["event_action"] == "resolve"]
    assert sorted(resolved) == [incident.key, f"{incident.key}-L2"]


async def test_a_rest_refusal_falls_back_to_a_re_page(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    fake_pagerduty.levels = 1  # a one-level escalation policy: level 2 is a 400
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    await bot.post_alert(alert_group(severity="critical"))
    incident = await bot.incident()
    await bot.at(FIVE_MINUTES)
    assert fake_pagerduty.escalations == []
    assert [e["dedup_key"] for e in fake_pagerduty.events] == [incident.key, f"{incident.key}-L2"]
    [page] = [e for e in await bot.events(EventKind.PAGE) if "re-paged" in e.message]
    assert "the REST API did not escalate: PagerDuty did not escalate the incident (HTTP 400)" in (
        page.message
    )


async def test_the_timer_survives_a_restart_and_a_resolve_cancels_it(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    await bot.post_alert(alert_group(severity="critical"))
    await bot.at(120)
    await bot.client.close()
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    bot.clock.advance(120)
    await bot.at(FIVE_MINUTES)
    assert [e["level"] for e in fake_pagerduty.escalations] == [2]

    await bot.post_alert(alert_group(severity="critical", status="resolved"))
    assert (await bot.incident()).status is Status.RESOLVED
    await bot.at(24 * 3600)
    assert [e["level"] for e in fake_pagerduty.escalations] == [2]
    stats = await bot.store.stats()
    assert stats.jobs_pending == stats.jobs_scheduled == 0  # the timers were cancelled
    assert await bot.events(EventKind.NOTE) == []  # resolved in time: no miss to note


async def test_a_missed_resolve_target_is_shown_noted_and_counted(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack)  # no PagerDuty at all
    await bot.post_alert(alert_group(severity="critical"))
    incident = await bot.incident()
    assert incident.data["targets"]["resolve_by"] == START + 4 * 3600
    assert "Resolve by" in bot.message(incident)
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.settle()
    await bot.at(4 * 3600 - 1)
    assert await bot.events(EventKind.NOTE) == []
    await bot.at(4 * 3600)
    [note] = await bot.events(EventKind.NOTE)
    assert note.message == "resolve target missed: still open after 4h (default for P0)"
    assert note.data["target"] == "resolve"
    incident = await bot.incident()
    assert "Resolve target missed" in bot.message(incident)
    assert any("resolve target missed" in text for text in bot.thread(incident))
    metrics = await scrape(bot.client)
    missed = "alertpilot_response_targets_missed_total"
    assert metrics.value(missed, target="resolve", severity="P0") == 1
    assert metrics.value(missed, target="ack", severity="P0") == 0  # acknowledged in time


async def test_a_playbook_sets_its_own_targets(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    checkout = Playbook.model_validate(
        {
            "name": "checkout",
            "match": ['alertname="CheckoutErrors"'],
            "escalation": {"ack_within": {"P1": "30m"}, "resolve_within": {"P1": "8h"}},
        }
    )
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, playbooks=[checkout]
    )
    await bot.post_alert(alert_group(severity="error"))
    state = (await bot.incident()).data["targets"]
    assert (state["ack_within"], state["resolve_within"], state["source"]) == (
        1800.0,
        8 * 3600.0,
        "playbook checkout, P1",
    )
    await bot.at(30 * 60 - 1)
    assert fake_pagerduty.escalations == []
    await bot.at(30 * 60)
    assert [e["level"] for e in fake_pagerduty.escalations] == [2]


async def test_a_p2_never_pages_by_itself_but_says_it_was_not_acknowledged(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    await bot.post_alert(alert_group(severity="warning"))
    await bot.at(3600)
    assert fake_pagerduty.events == [] and fake_pagerduty.escalations == []
    [escalated] = await bot.events(EventKind.ESCALATED)
    assert escalated.data["reason"] == "not acknowledged within 1h (default for P2)"
    [page] = await bot.events(EventKind.PAGE)
    assert page.message.startswith("no page for level 2: the escalation rule (default for P2)")
    assert bot.client.app[keys.SETTINGS].response.ack_within.P2 == 3600.0
