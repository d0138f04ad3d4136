"""The incident thread's follow-ups: a status-update reminder every 15 minutes while a
P0/P1 is open, none after it resolves, none for incidents a storm roll-up stands for;
a postmortem draft from the timeline when a P0/P1 resolves. Through the loopback Slack
and PagerDuty fakes, on a ManualClock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.core.incidents import EventKind
from bot.playbook.model import Playbook
from fakes import FakePagerDuty, FakeSlack
from pagerduty_kit import alert_group
from responsekit import start_bot
from slackkit import CHANNEL

REMINDER = ":hourglass_flowing_sand: *Status update due*"


def reminders(texts: list[str]) -> list[str]:
    return [t for t in texts if t.startswith(REMINDER)]


async def test_reminders_every_15_minutes_until_resolved_and_none_after(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack)
    await bot.post_alert(alert_group(severity="error"))  # P1
    incident = await bot.incident()
    await bot.at(15 * 60 - 1)
    assert reminders(bot.thread(incident)) == []
    await bot.at(15 * 60)
    [first] = reminders(bot.thread(incident))
    assert first.startswith(f"{REMINDER}: #1 has been open for 15m (P1, not acknowledged yet")
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.at(30 * 60)
    await bot.at(45 * 60)
    sent = reminders(bot.thread(incident))
    assert len(sent) == 3
    assert "has been open for 45m (P1, acknowledged by ada" in sent[-1]

    await bot.at(50 * 60)
    await bot.post_alert(alert_group(severity="error", status="resolved"))
    await bot.at(6 * 3600)
    assert len(reminders(bot.thread(incident))) == 3  # none after the resolve


async def test_a_p2_gets_no_reminders(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack)
    await bot.post_alert(alert_group(severity="warning"))
    await bot.at(3600)
    assert reminders(bot.thread(await bot.incident())) == []


async def test_incidents_in_a_storm_roll_up_get_no_reminders(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    storm = 4
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, slack={"storm_threshold": storm})
    for n in range(storm + 3):
        await bot.post_alert(
            alert_group(f"Storm{n:03d}", severity="error", fingerprint=f"fp{n:06d}")
        )
    await bot.at(3600)
    posts = [m for (ch, _), m in fake_slack.messages.items() if ch == CHANNEL]
    texts = [m["text"] for m in posts]
    assert any(t.startswith("Alert storm") for t in texts)
    # the first incidents posted their own messages before the storm began: they get
    # reminders; those posted in the roll-up's thread get none
    reminded = {t.split("#", 1)[1].split(" ", 1)[0] for t in reminders(texts)}
    assert reminded == {str(n) for n in range(1, storm + 1)}


async def test_a_resolved_p0_gets_a_postmortem_draft_from_its_timeline(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    checkout = Playbook.model_validate(
        {
            "name": "checkout",
            "match": ['alertname="CheckoutErrors"'],
            "diagnostics": [
                {
                    "name": "errors",
                    "kind": "promql",
                    "label": "5xx share",
                    "query": "vector(0.2)",
                    "expect": "< 0.05",
                }
            ],
        }
    )
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, playbooks=[checkout]
    )
    await bot.post_alert(alert_group(severity="critical"))  # P0: paged at once
    await bot.at(300)  # not acknowledged: level 2
    await bot.at(420)
    await bot.press("ap_ack")
    await bot.actions.note(1, actor="ada", source="slack", text="rolled back the deploy")
    await bot.at(3600)
    await bot.press("ap_resolve")
    incident = await bot.incident()
    thread = bot.thread(incident)
    [draft] = [t for t in thread if t.startswith(":memo: *Postmortem draft for #1*")]
    resolution = next(t for t in thread if t.startswith(":white_check_mark: resolved by"))
    assert thread.index(draft) > thread.index(resolution)
    lines = draft.splitlines()
    timeline = lines[
        lines.index("*Timeline* (UTC)") + 1 : lines.index("*What the diagnostics found*")
    ]
    joined = "\n".join(timeline)
    for expected in (
        "1 alert(s) firing: CheckoutErrors {instance=checkout-pod-a",
        "paged PagerDuty (critical)",
        "escalated to level 2: not acknowledged within 5m (default for P0)",
        "escalated PagerDuty's incident 1 to level 2 (REST API)",
        "acknowledged by @ada (U0ADA) in Slack",
        "rolled back the deploy (ada)",
        "resolved by @ada (U0ADA) in Slack",
    ):
        assert expected in joined, (expected, joined)
    assert timeline[0].startswith("• 08:00 ")  # times of day, UTC (the clock starts 08:00)
    assert "*Acknowledged* after 7m: acknowledged by @ada (U0ADA) in Slack" in draft
    assert "*Resolved* after 1h: resolved by @ada (U0ADA) in Slack" in draft
    assert "acknowledge within 5m: missed; resolve within 4h: met" in draft
    assert "escalated 1 time(s), to level 2" in draft
    found = "*What the diagnostics found*\n• Prometheus unreachable: checks not run (1 of 1)"
    assert found in draft  # no Prometheus here: never counted as passed
    assert "• NOT CHECKED 5xx share: not checked (" in draft
    assert "*Remediation taken*\n• none" in draft
    assert "☐ Action items, each with an owner and a due date" in draft
    assert "☐ Root cause, and what triggered it" in draft

    await bot.at(7200)  # posted once
    assert len([t for t in bot.thread(incident) if t.startswith(":memo: *Postmortem")]) == 1
    assert len(await bot.events(EventKind.RESOLVED)) == 1


async def test_a_resolved_p2_gets_no_postmortem_draft(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack)
    await bot.post_alert(alert_group(severity="warning"))
    await bot.post_alert(alert_group(severity="warning", status="resolved"))
    assert not any("Postmortem" in t for t in bot.thread(await bot.incident()))
