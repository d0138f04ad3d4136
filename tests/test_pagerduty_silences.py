"""``pagerduty.ack_silences``: an acknowledgement silences the incident's alerts in a real
Alertmanager until the incident resolves, then the silences are expired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import ManualClock
from bot.core.incidents import EventKind
from fakes import FakePagerDuty
from pagerduty_kit import Bot, alert_group, start_bot
from stack import Alertmanager

pytestmark = pytest.mark.integration


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[Alertmanager]:
    async with Alertmanager(tmp_path, "http://127.0.0.1:9/unused") as am:
        yield am


async def silenced_bot(
    aiohttp_client: Any, tmp_path: Path, fake: FakePagerDuty, am: Alertmanager
) -> Bot:
    return await start_bot(
        aiohttp_client,
        tmp_path,
        fake,
        ManualClock(),
        pagerduty={"ack_silences": True},
        alertmanager={"url": am.url},
    )


def active(silences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in silences if s["status"]["state"] == "active"]


async def test_ack_silences_the_group_until_resolve(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty, alertmanager: Alertmanager
) -> None:
    bot = await silenced_bot(aiohttp_client, tmp_path, fake_pagerduty, alertmanager)
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    incident = await bot.incident()
    assert await alertmanager.silences() == []

    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.settle()
    await bot.actions.unacknowledge(incident.id, actor="ada", source="slack")
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")  # no second silence
    await bot.settle()
    [silence] = active(await alertmanager.silences())
    matchers = {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]}
    assert matchers == {  # the alert's whole label set, not the group's
        ("alertname", "CheckoutErrors", True, False),
        ("instance", "checkout-pod-a", True, False),
        ("namespace", "shop", True, False),
        ("service", "checkout", True, False),
        ("severity", "critical", True, False),
    }
    assert silence["createdBy"] == "alertpilot"
    [entry] = (await bot.incident()).data["silences"]
    assert entry["id"] == silence["id"]
    assert (entry["source"], entry["expire_on_resolve"]) == ("pagerduty", True)

    await bot.post_alert(alert_group(status="resolved"))
    await bot.settle()
    assert active(await alertmanager.silences()) == []
    [entry] = (await bot.incident()).data["silences"]
    assert entry["expired_at"] is not None
    notes = [e.message for e in await bot.events(incident.id, EventKind.NOTE)]
    assert any(n.startswith("silenced {alertname=") for n in notes)
    expired = f"expired the acknowledgement silence {silence['id']}: the incident resolved"
    assert notes.count(expired) == 1
    actions = [e["event_action"] for e in fake_pagerduty.events]
    assert actions == ["trigger", "acknowledge", "resolve"]


async def test_ack_in_pagerduty_silences_too_and_resolve_in_pagerduty_expires(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty, alertmanager: Alertmanager
) -> None:
    bot = await silenced_bot(aiohttp_client, tmp_path, fake_pagerduty, alertmanager)
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    key = (await bot.incident()).key
    await bot.webhook(bot.event("incident.acknowledged", "PINC1", key, "Ada Lovelace"))
    await bot.settle()
    assert len(active(await alertmanager.silences())) == 1
    await bot.webhook(bot.event("incident.resolved", "PINC1", key, "Ada Lovelace"))
    await bot.settle()
    assert active(await alertmanager.silences()) == []
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]


async def test_alertmanager_down_retries_without_holding_up_pagerduty(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, ManualClock(), pagerduty={"ack_silences": True}
    )  # alertmanager.url points at a closed port
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    incident = await bot.incident()
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.settle()
    await bot.actions.resolve(incident.id, actor="ada", source="slack")
    await bot.settle()
    assert [e["event_action"] for e in fake_pagerduty.events] == [
        "trigger",
        "acknowledge",
        "resolve",
    ]
    assert "silences" not in (await bot.incident()).data
