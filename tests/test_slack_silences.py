"""The Silence button and ``silence`` command against a real Alertmanager."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.core.incidents import EventKind
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
            "Silenced #1 until resolved or for 1d at most: 3 alerts, one silence each ("
        )
        assert texts(fake_slack, "cmd")[0].startswith("Silenced #1 for 4h: 3 alerts, one silence")

        silences = {s["id"]: s for s in await am.silences()}
        incident = await client.app[keys.STORE].get_incident(1)
        records = incident.data["silences"]
        assert [r["expire_on_resolve"] for r in records] == [True] * 3 + [False] * 3
        own = [dict(alert.labels) for alert in incident.alerts]
        for press in (records[:3], records[3:]):
            silenced = []
            for record in press:
                silence = silences[record["id"]]
                assert silence["status"]["state"] == "active"
                assert silence["createdBy"] == "@alice (U0ALICE)"
                assert all(m["isEqual"] and not m["isRegex"] for m in silence["matchers"])
                silenced.append({m["name"]: m["value"] for m in silence["matchers"]})
            assert silenced == own  # each alert on its whole label set, nothing wider
        notes = [e for e in incident.timeline if e.kind == EventKind.NOTE]
        assert [e.actor for e in notes] == ["@alice (U0ALICE)"] * 2
        shown = message_text(fake_slack.messages[(CHANNEL, incident.data["slack"]["ts"])])
        assert ":mute: Silenced: 3 silences (" in shown
        assert "until resolved by @alice (U0ALICE)" in shown

        await client.post("/alertmanager", json=payload("captured-resolved"))
        await settle(client)
        silences = {s["id"]: s for s in await am.silences()}
        for record in records[:3]:
            assert silences[record["id"]]["status"]["state"] == "expired"
        for record in records[3:]:
            assert silences[record["id"]]["status"]["state"] == "active"
        incident = await client.app[keys.STORE].get_incident(1)
        expired_at = [r["expired_at"] for r in incident.data["silences"]]
        assert all(expired_at[:3]) and not any(expired_at[3:])


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
        assert texts(fake_slack, "cap")[0].startswith("Silenced #1 for 2h: 3 alerts, one")
        assert texts(fake_slack, "resolved")[0].startswith(
            "Silenced #1 until resolved or for 2h at most: 3 alerts, one silence each ("
        )
        records = (await client.app[keys.STORE].get_incident(1)).data["silences"]
        silences = {s["id"]: s for s in await am.silences()}
        assert len(silences) == 6
        assert all(abs(lasts(silences[r["id"]]) - 7200) < 5 for r in records)
        assert [r["expire_on_resolve"] for r in records] == [False] * 3 + [True] * 3
