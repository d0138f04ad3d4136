"""The Silence button and ``silence`` command against a real Alertmanager."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.incidents import EventKind
from conftest import payload
from fakes import FakeSlack
from slackkit import (
    CHANNEL,
    action_body,
    command_body,
    message_text,
    post_signed,
    settle,
    slack_settings,
    start,
    texts,
)
from stack import Alertmanager

pytestmark = pytest.mark.integration


async def test_silence_button_and_command_with_expiry_on_resolve(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    async with Alertmanager(tmp_path, "http://127.0.0.1:9/unused") as am:
        settings = slack_settings(tmp_path, fake_slack, graphs=False)
        settings = settings.model_copy(
            update={"alertmanager": settings.alertmanager.model_copy(update={"url": am.url})}
        )
        client = await start(aiohttp_client, settings)
        await client.post("/alertmanager", json=payload("captured-firing"))
        await settle(client)

        body = action_body("ap_silence", "1:resolved", fake_slack, select=True, rid="sil")
        assert (await post_signed(client, body)).status == 200
        await settle(client)
        await post_signed(client, command_body("silence 1 4h", fake_slack, rid="cmd"))
        await settle(client)
        assert texts(fake_slack, "sil")[0].startswith(
            "Silenced #1 until resolved or for 1d at most (silence "
        )
        assert texts(fake_slack, "cmd")[0].startswith("Silenced #1 for 4h (silence ")

        silences = {s["id"]: s for s in await am.silences()}
        incident = await client.app[keys.STORE].get_incident(1)
        records = incident.data["silences"]
        assert [r["expire_on_resolve"] for r in records] == [True, False]
        for record in records:
            silence = silences[record["id"]]
            assert silence["status"]["state"] == "active"
            assert silence["createdBy"] == "@alice (U0ALICE)"
            matchers = {(m["name"], m["value"], m["isEqual"]) for m in silence["matchers"]}
            assert matchers == {("alertname", "HighErrorRate", True), ("service", "checkout", True)}
        notes = [e for e in incident.timeline if e.kind == EventKind.NOTE]
        assert [e.actor for e in notes] == ["@alice (U0ALICE)"] * 2
        shown = message_text(fake_slack.messages[(CHANNEL, incident.data["slack"]["ts"])])
        assert ":mute: Silenced:" in shown and "until resolved by @alice (U0ALICE)" in shown

        await client.post("/alertmanager", json=payload("captured-resolved"))
        await settle(client)
        silences = {s["id"]: s for s in await am.silences()}
        until_resolved, four_hours = records
        assert silences[until_resolved["id"]]["status"]["state"] == "expired"
        assert silences[four_hours["id"]]["status"]["state"] == "active"
        incident = await client.app[keys.STORE].get_incident(1)
        assert incident.data["silences"][0]["expired_at"] is not None


def lasts(silence: dict[str, Any]) -> float:
    """How long an Alertmanager silence runs, in seconds."""
    starts, ends = (datetime.fromisoformat(silence[k]) for k in ("startsAt", "endsAt"))
    return (ends - starts).total_seconds()


async def test_silences_at_the_cap_are_made_and_longer_ones_refused(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """``slack.max_silence: 2h``: 2h is made, 3h is refused with the cap named and reaches
    no Alertmanager, and "until resolved" ends after 2h at the latest."""
    async with Alertmanager(tmp_path, "http://127.0.0.1:9/unused") as am:
        settings = slack_settings(tmp_path, fake_slack, graphs=False, max_silence="2h")
        settings = settings.model_copy(
            update={"alertmanager": settings.alertmanager.model_copy(update={"url": am.url})}
        )
        client = await start(aiohttp_client, settings)
        await client.post("/alertmanager", json=payload("captured-firing"))
        await settle(client)

        await post_signed(client, command_body("silence 1 3h", fake_slack, rid="over"))
        menu = action_body("ap_silence", "1:4h", fake_slack, select=True, rid="menu")
        await post_signed(client, menu)
        await settle(client)
        for rid in ("over", "menu"):
            assert texts(fake_slack, rid) == [
                ":no_entry: A silence from Slack lasts at most 2h (slack.max_silence): ask for "
                "2h or less, or silence in Alertmanager itself."
            ]
        assert await am.silences() == []
        assert "silences" not in (await client.app[keys.STORE].get_incident(1)).data

        await post_signed(client, command_body("silence 1 2h", fake_slack, rid="cap"))
        await settle(client)
        menu = action_body("ap_silence", "1:resolved", fake_slack, select=True, rid="resolved")
        await post_signed(client, menu)
        await settle(client)
        assert texts(fake_slack, "cap")[0].startswith("Silenced #1 for 2h (silence ")
        assert texts(fake_slack, "resolved")[0].startswith(
            "Silenced #1 until resolved or for 2h at most (silence "
        )
        records = (await client.app[keys.STORE].get_incident(1)).data["silences"]
        silences = {s["id"]: s for s in await am.silences()}
        assert len(silences) == 2
        assert [abs(lasts(silences[r["id"]]) - 7200) < 5 for r in records] == [True, True]
        assert [r["expire_on_resolve"] for r in records] == [False, True]
