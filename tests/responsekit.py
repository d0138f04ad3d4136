"""Helpers for the response-target tests: the real app with Slack and PagerDuty pointed
at their loopback fakes, on a ManualClock, the background runner stopped, so that a test
moves time (``advance``) and every timing assertion is exact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.clock import ManualClock
from bot.core.incidents import Event, Incident
from bot.core.transitions import IncidentActions
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from bot.store.base import Store
from conftest import make_settings
from fakes import FakePagerDuty, FakeSlack
from pagerduty_kit import SEVERITY_MAP, pd_section
from slackkit import CHANNEL, SECRET, action_body, message_text, post_signed


@dataclass
class Bot:
    client: TestClient
    clock: ManualClock
    slack: FakeSlack
    pagerduty: FakePagerDuty | None

    @property
    def store(self) -> Store:
        store: Store = self.client.app[keys.STORE]
        return store

    @property
    def actions(self) -> IncidentActions:
        actions: IncidentActions = self.client.app[keys.ACTIONS]
        return actions

    async def post_alert(self, payload: Mapping[str, Any]) -> None:
        resp = await self.client.post("/alertmanager", json=payload)
        assert resp.status == 200, await resp.text()
        await self.settle()

    async def settle(self) -> None:
        """Fold the inbox into incidents and run every job due now, until none is left."""
        app = self.client.app
        for _ in range(50):
            await app[keys.SLACK].tasks.join()  # a button's work runs after its ack
            await app[keys.INBOX].drain()
            if not await app[keys.RUNNER].run_due():
                return
        raise AssertionError("jobs kept coming for 50 rounds")

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()

    async def at(self, seconds: float) -> None:
        """Move to ``seconds`` after the start, when the tests open their incident."""
        await self.advance(START + seconds - self.clock.now())

    async def incident(self, incident_id: int = 1) -> Incident:
        return await self.store.get_incident(incident_id)

    async def events(self, kind: str, incident_id: int = 1) -> list[Event]:
        return [e for e in await self.store.events(incident_id) if e.kind == kind]

    async def press(self, action_id: str, value: str = "1") -> None:
        """A Slack button pressed by a person in the incident's channel."""
        body = action_body(action_id, value, self.slack, user="U0ADA", name="ada")
        resp = await post_signed(self.client, body, timestamp=self.clock.now())
        assert resp.status == 200, await resp.text()
        await self.settle()

    def thread(self, incident: Incident) -> list[str]:
        """The texts of the replies in the incident's thread, oldest first."""
        ts = incident.data["slack"]["ts"]
        return [m["text"] for m in self.slack.thread(CHANNEL, ts) if m["ts"] != ts]

    def message(self, incident: Incident) -> str:
        """Everything the incident's message shows now."""
        return message_text(self.slack.messages[(CHANNEL, incident.data["slack"]["ts"])])


START = 1_800_000_000.0


async def start_bot(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_slack: FakeSlack,
    pagerduty: FakePagerDuty | None = None,
    *,
    pd: Mapping[str, Any] | None = None,
    slack: Mapping[str, Any] | None = None,
    playbooks: list[Playbook] | None = None,
    **sections: Any,
) -> Bot:
    """``pd`` and ``slack`` override keys of those sections (``pd={"api_token": ""}``: no
    REST API); ``sections`` are other config sections."""
    settings = make_settings(
        tmp_path,
        slack={
            "bot_token": fake_slack.token,
            "signing_secret": SECRET,
            "api_url": fake_slack.base_url,
            "default_channel": CHANNEL,
            "channel_rate": 50,
            "storm_threshold": 50,
            "graphs": False,
            **(slack or {}),
        },
        incidents={"severity_map": SEVERITY_MAP},
        **({"pagerduty": pd_section(pagerduty, **(pd or {}))} if pagerduty else {}),
        **sections,
    )
    clock = ManualClock(START)
    app = create_app(settings, clock=clock)
    if playbooks is not None:
        app[keys.PLAYBOOKS] = PlaybookSet(playbooks)
    client: TestClient = await aiohttp_client(app)
    await app[keys.RUNNER].stop()
    return Bot(client, clock, fake_slack, pagerduty)
