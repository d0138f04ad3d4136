"""A crafted alert cannot widen a silence: alerts posted to a real Alertmanager reach the bot
through its webhook, the incident is silenced through the signed Slack Silence button or
command and through PagerDuty's ``ack_silences`` (a signed PagerDuty acknowledgement), and
the real Alertmanager then says which alerts are suppressed.

The attack as it was tried: ``{alertname="PaymentsDown", instance="attacker-box"}`` has no
``service`` label, so its group labels are ``{alertname}`` alone; silencing on them
suppressed the real payments alert too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot import keys
from bot.app import create_app
from bot.core.clock import SystemClock
from bot.core.incidents import AlertRecord, EventKind, Incident, Status
from bot.settings import Severity
from bot.silences.scope import MAX_ALERTS, SilenceRefused, alert_silence, silences_for
from bot.store.base import Store
from conftest import make_settings
from fakes import FakePagerDuty, FakeSlack, webhook_v3_event
from pagerduty_kit import Bot, pd_section
from slackkit import SECRET, action_body, command_body, post_signed, texts
from stack import Alertmanager, free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
PAYMENTS = {"alertname": "PaymentsDown", "service": "payments", "instance": "pay-1",
            "severity": "critical"}  # fmt: skip
CRAFTED = {"alertname": "PaymentsDown", "instance": "attacker-box"}
SUBSET = {"alertname": "PaymentsDown", "instance": "pay-1"}  # the real alert's, minus two


def alert(labels: Mapping[str, str]) -> dict[str, Any]:
    return {"labels": dict(labels), "annotations": {"summary": "payments are down"}}


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + 15
    while (found := await probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within 15s")
        await asyncio.sleep(0.05)
    return found


@dataclass
class Stack:
    am: Alertmanager
    client: TestClient[Any, Any]
    pagerduty: Bot

    @property
    def store(self) -> Store:
        store: Store = self.client.app[keys.STORE]
        return store

    async def settle(self) -> None:
        """Fold the inbox, run every job due now and finish the Slack work, until nothing
        is left (jobs due later, such as escalation timers, stay queued)."""
        app = self.client.app
        for _ in range(100):
            await app[keys.SLACK].tasks.join()  # a press's work may queue jobs: first
            folded = await app[keys.INBOX].drain()
            ran = await app[keys.RUNNER].run_due()
            if not folded and not ran and (await self.store.stats()).inbox_depth == 0:
                return
        raise AssertionError("work kept coming for 100 rounds")

    async def incident_of(self, labels: Mapping[str, str], firing: int = 1) -> Incident:
        """The incident Alertmanager's webhook made for the group ``labels`` belongs to
        (grouped by alertname and service), once it holds ``firing`` firing alerts."""
        group = {k: v for k, v in labels.items() if k in ("alertname", "service")}

        async def probe() -> Incident | None:
            for summary in await self.store.list_incidents():
                if dict(summary.group_labels) == group:
                    incident = await self.store.get_incident(summary.id)
                    return incident if len(incident.firing) == firing else None
            return None

        incident = await eventually(probe, f"the incident of {group}")
        await self.settle()
        return incident

    async def state(self, labels: Mapping[str, str]) -> str:
        """What the real Alertmanager says of the alert with exactly ``labels``."""
        found = [
            a for a in await self.am.alerts(f'alertname="{labels["alertname"]}"')
            if a["labels"] == dict(labels)
        ]  # fmt: skip
        assert len(found) == 1, found
        return str(found[0]["status"]["state"])

    async def notes(self, incident_id: int) -> list[str]:
        return [e.message for e in await self.store.events(incident_id) if e.kind == EventKind.NOTE]


@asynccontextmanager
async def stack(
    tmp_path: Path,
    aiohttp_server: Any,
    aiohttp_client: Any,
    slack: FakeSlack,
    pagerduty: FakePagerDuty,
) -> AsyncIterator[Stack]:
    """Alertmanager delivering to the bot, which talks to Slack and PagerDuty (with
    ``ack_silences``) and silences through that Alertmanager."""
    port = free_port()
    async with Alertmanager(tmp_path, f"http://127.0.0.1:{port}/alertmanager") as am:
        settings = make_settings(
            tmp_path,
            slack={
                "bot_token": slack.token,
                "signing_secret": SECRET,
                "api_url": slack.base_url,
                "default_channel": "C0ALERTS",
                "graphs": False,
            },
            pagerduty=pd_section(pagerduty, ack_silences=True),
            alertmanager={"url": am.url, "timeout": 5},
            workers={"max_attempts": 30},
        )
        server: TestServer = await aiohttp_server(create_app(settings), port=port)
        client: TestClient[Any, Any] = await aiohttp_client(server)
        yield Stack(am, client, Bot(client, SystemClock(), pagerduty))


async def test_the_slack_silence_of_a_crafted_alert_does_not_silence_the_real_one(
    tmp_path: Path,
    aiohttp_server: Any,
    aiohttp_client: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    async with stack(tmp_path, aiohttp_server, aiohttp_client, fake_slack, fake_pagerduty) as s:
        await s.am.post_alerts([alert(PAYMENTS), alert(CRAFTED)])
        await s.incident_of(PAYMENTS)
        incident = await s.incident_of(CRAFTED)
        assert dict(incident.group_labels) == {"alertname": "PaymentsDown"}

        press = action_body("ap_silence", f"{incident.id}:resolved", fake_slack, select=True)
        assert (await post_signed(s.client, press)).status == 200
        await s.settle()

        [answer] = texts(fake_slack, "b1")
        assert answer.startswith(
            f"Silenced #{incident.id} until resolved or for 1d at most (silence "
        )
        assert await s.state(PAYMENTS) == "active"
        assert await s.state(CRAFTED) == "suppressed"
        [silence] = await s.am.silences()
        assert {
            (m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]
        } == {
            ("alertname", "PaymentsDown", True, False),
            ("instance", "attacker-box", True, False),
        }
        [record] = (await s.store.get_incident(incident.id)).data["silences"]
        assert record["id"] == silence["id"] and record["source"] == "slack"


async def test_the_ack_silence_of_a_crafted_alert_does_not_silence_the_real_one(
    tmp_path: Path,
    aiohttp_server: Any,
    aiohttp_client: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    async with stack(tmp_path, aiohttp_server, aiohttp_client, fake_slack, fake_pagerduty) as s:
        await s.am.post_alerts([alert(PAYMENTS), alert(CRAFTED)])
        await s.incident_of(PAYMENTS)
        incident = await s.incident_of(CRAFTED)

        ack = webhook_v3_event("incident.acknowledged", "PINC9", incident.key, "Ada Lovelace")
        assert (await s.pagerduty.webhook(ack))[0] == 200
        await s.settle()

        assert await s.state(PAYMENTS) == "active"
        assert await s.state(CRAFTED) == "suppressed"
        [silence] = await s.am.silences()
        assert {m["name"]: m["value"] for m in silence["matchers"]} == CRAFTED
        [record] = (await s.store.get_incident(incident.id)).data["silences"]
        assert (record["id"], record["source"]) == (silence["id"], "pagerduty")


async def test_a_silence_alertmanager_says_reaches_an_outside_alert_is_refused(
    tmp_path: Path,
    aiohttp_server: Any,
    aiohttp_client: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    """The crafted alert carries a subset of the real alert's labels: even a silence on
    its whole label set would match the real one, so neither path makes any."""
    async with stack(tmp_path, aiohttp_server, aiohttp_client, fake_slack, fake_pagerduty) as s:
        await s.am.post_alerts([alert(PAYMENTS), alert(SUBSET)])
        await s.incident_of(PAYMENTS)
        incident = await s.incident_of(SUBSET)

        command = command_body(f"silence {incident.id} 4h", fake_slack, rid="cmd")
        assert (await post_signed(s.client, command)).status == 200
        await s.settle()
        [answer] = texts(fake_slack, "cmd")
        assert answer == (
            ':no_entry: Nothing was silenced: a silence on {alertname="PaymentsDown", '
            'instance="pay-1"} would also silence 1 alert outside incident '
            f'#{incident.id}: {{alertname="PaymentsDown", instance="pay-1", '
            'service="payments", severity="critical"}.'
        )

        ack = webhook_v3_event("incident.acknowledged", "PINC9", incident.key, "Ada Lovelace")
        assert (await s.pagerduty.webhook(ack))[0] == 200
        await s.settle()

        assert await s.am.silences() == []
        assert await s.state(PAYMENTS) == "active"
        assert await s.state(SUBSET) == "active"
        current = await s.store.get_incident(incident.id)
        assert current.status is Status.ACKNOWLEDGED and "silences" not in current.data
        refused = [n for n in await s.notes(incident.id) if "would also silence 1 alert" in n]
        assert len(refused) == 2, refused
        assert refused[0].startswith(
            f"@alice (U0ALICE) asked in Slack to silence #{incident.id}: refused, a silence on"
        )
        assert refused[1].startswith(
            "not silenced on Ada Lovelace's acknowledgement: a silence on "
            '{alertname="PaymentsDown", instance="pay-1"}'
        )


async def test_several_alerts_get_one_exact_silence_each_and_all_expire_on_resolve(
    tmp_path: Path,
    aiohttp_server: Any,
    aiohttp_client: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    """Label values a regex would read as patterns are matched for equality: ``db.1``
    does not reach ``dbx1``. A resolved alert of the incident is not silenced. The Slack
    press and the acknowledgement each make one silence per firing alert, all recorded,
    all expired when the incident resolves."""
    tricky = [
        {"alertname": "DiskFull", "instance": "db.1"},
        {"alertname": "DiskFull", "instance": 'db[2]|.*"q\\z'},
    ]
    resolved = {"alertname": "DiskFull", "instance": "db-3"}
    outsider = {"alertname": "DiskFull", "service": "reports", "instance": "dbx1"}
    async with stack(tmp_path, aiohttp_server, aiohttp_client, fake_slack, fake_pagerduty) as s:
        await s.am.post_alerts([alert(labels) for labels in [*tricky, resolved, outsider]])
        await s.incident_of(outsider)
        await s.incident_of(resolved, firing=3)
        await s.am.resolve_alerts([alert(resolved)])
        incident = await s.incident_of(resolved, firing=2)

        press = action_body("ap_silence", f"{incident.id}:resolved", fake_slack, select=True)
        await post_signed(s.client, press)
        await s.settle()
        [answer] = texts(fake_slack, "b1")
        assert answer.startswith(
            f"Silenced #{incident.id} until resolved or for 1d at most: 2 alerts, one silence"
        )

        for labels in tricky:
            assert await s.state(labels) == "suppressed"
            # Alertmanager reads the preview's filter as the silence's matchers: it finds them
            preview = await s.am.alerts(*(str(m) for m in alert_silence(labels)))
            assert [a["labels"] for a in preview] == [labels]
        assert await s.state(outsider) == "active"
        silences = {x["id"]: x for x in await s.am.silences()}
        records = (await s.store.get_incident(incident.id)).data["silences"]
        assert sorted(r["id"] for r in records) == sorted(silences)
        silenced = [{m["name"]: m["value"] for m in silences[r["id"]]["matchers"]} for r in records]
        assert sorted(silenced, key=str) == sorted(tricky, key=str)  # db-3 had resolved

        ack = webhook_v3_event("incident.acknowledged", "PINC9", incident.key, "Ada Lovelace")
        assert (await s.pagerduty.webhook(ack))[0] == 200
        await s.settle()
        records = (await s.store.get_incident(incident.id)).data["silences"]
        assert [r["source"] for r in records] == ["slack"] * 2 + ["pagerduty"] * 2
        assert sorted(str(r["matchers"]) for r in records[2:]) == sorted(
            str(r["matchers"]) for r in records[:2]
        )
        assert len(await s.am.silences()) == 4

        await post_signed(s.client, command_body(f"resolve {incident.id}", fake_slack, rid="r"))
        await s.settle()
        assert all(x["status"]["state"] == "expired" for x in await s.am.silences())
        records = (await s.store.get_incident(incident.id)).data["silences"]
        assert all(r["expired_at"] is not None for r in records)
        for labels in tricky:
            assert await s.state(labels) == "active"


def firing(n: int, **extra: str) -> AlertRecord:
    labels = {"alertname": "DiskFull", "instance": f"db-{n}", **extra}
    return AlertRecord(f"fp{n}", "firing", labels, {}, "", "", "")


def test_what_cannot_be_silenced_narrowly_is_refused() -> None:
    base = Incident(
        id=4, key="k", group_hash="h", receiver="bot", group_key="{}", status=Status.TRIGGERED,
        severity=Severity.P2, title="DiskFull",
        summary="", group_labels={"alertname": "DiskFull"}, common_labels={},
        common_annotations={}, external_url="", opened_at=0.0, updated_at=0.0,
    )  # fmt: skip
    assert [str(m) for m in silences_for(replace_alerts(base, firing(1)))[0]] == [
        'alertname="DiskFull"',
        'instance="db-1"',
    ]
    with pytest.raises(SilenceRefused, match="has no firing alert"):
        silences_for(base)
    with pytest.raises(SilenceRefused, match=f"silences at most {MAX_ALERTS}"):
        silences_for(replace_alerts(base, *(firing(n) for n in range(MAX_ALERTS + 1))))
    with pytest.raises(SilenceRefused, match="no silence matcher can hold"):
        silences_for(replace_alerts(base, firing(1, **{"bad-name": "x"})))


def replace_alerts(incident: Incident, *alerts: AlertRecord) -> Incident:
    return replace(incident, alerts=alerts)
