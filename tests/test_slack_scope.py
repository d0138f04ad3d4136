"""Who may act on an incident from Slack: anyone in the channel its message is in, a
responder (``slack.responders``: users and user groups) from anywhere, nobody else.
``query`` only where configured; silences no longer than ``slack.max_silence``.

Every request is signed and posted to the app; what it did is read from the Slack and
PagerDuty fakes, the store and the log.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Status
from conftest import make_settings, payload
from fakes import FakePagerDuty, FakeSlack
from pagerduty_kit import pd_section
from slackkit import (
    CHANNEL,
    action_body,
    command_body,
    message_text,
    post_signed,
    settle_due,
    slack_settings,
    start,
    texts,
)

SRE = "C0SRE"  # the private channel checkout's incidents are routed to
ELSEWHERE = "C0RANDOM"
ROUTES = [{"match": ['service="checkout"'], "channel": SRE}]
OUTSIDER = {"user": "U0MALLORY", "name": "mallory", "channel": ELSEWHERE, "channel_name": "random"}


class Bot:
    """The app with Slack and PagerDuty, on a manual clock, and one P1 incident (#1)
    routed to ``SRE``: PagerDuty is paged if nobody acknowledges it within 5 minutes."""

    def __init__(self, client: Any, clock: ManualClock, slack: FakeSlack) -> None:
        self.client, self.clock, self.slack = client, clock, slack

    async def post(self, body: bytes) -> Any:
        resp = await post_signed(self.client, body, timestamp=self.clock.now())
        assert resp.status == 200, await resp.text()
        return resp

    async def command(self, text: str, rid: str, **who: Any) -> Any:
        return await self.post(command_body(text, self.slack, rid=rid, **who))

    async def press(self, action_id: str, value: str, rid: str, **who: Any) -> None:
        select = action_id == "ap_silence"
        await self.post(action_body(action_id, value, self.slack, rid=rid, select=select, **who))

    async def settle(self) -> None:
        await settle_due(self.client)

    async def incident(self) -> Any:
        return await self.client.app[keys.STORE].get_incident(1)


async def start_bot(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
    **slack: Any,
) -> Bot:
    settings = slack_settings(tmp_path, fake_slack, graphs=False, routes=ROUTES, **slack)
    paging = make_settings(tmp_path, pagerduty=pd_section(fake_pagerduty)).pagerduty
    clock = ManualClock()
    client = await start(aiohttp_client, settings.model_copy(update={"pagerduty": paging}), clock)
    bot = Bot(client, clock, fake_slack)
    await client.post("/alertmanager", json=payload("captured-firing"))
    await bot.settle()
    incident = await bot.incident()
    assert incident.data["slack"]["channel"] == SRE
    assert incident.data["pagerduty"]["escalation"] == "scheduled"
    return bot


def ephemeral(fake: FakeSlack, rid: str) -> str:
    """The one answer sent through ``response_url`` ``rid``, checked to be private."""
    [body] = fake.responses.get(rid, [])
    assert body["response_type"] == "ephemeral" and body["replace_original"] is False, body
    text: str = body["text"]
    return text


def ack_json(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


def refusals(caplog: pytest.LogCaptureFixture) -> list[tuple[Any, ...]]:
    """The refusals logged: (command, user, channel, incident) from the record's fields."""
    fields = ("command", "slack_user", "slack_channel", "incident")
    return [
        tuple(getattr(r, f) for f in fields)
        for r in caplog.records
        if r.name == "bot.slack.access" and hasattr(r, "refused")
    ]


# -- the attack -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "people",
    [{}, {"responders": ["U0RESP", "S0ONCALL"], "query_users": ["U0RESP"]}],
    ids=["nothing-configured", "responders-configured"],
)
async def test_an_outsider_in_another_channel_can_do_nothing_to_a_private_incident(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
    caplog: pytest.LogCaptureFixture,
    people: dict[str, list[str]],
) -> None:
    caplog.set_level(logging.INFO, logger="bot.slack")
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty, **people)
    fake_slack.set_usergroup("S0ONCALL", ["U0CAROL"])
    before = await bot.incident()
    seen = len(fake_slack.requests)
    message = dict(fake_slack.messages[(SRE, before.data["slack"]["ts"])])

    for text in ("show 1", "ack 1", "silence 1 30d", "silence 1 resolved", "resolve 1"):
        resp = await bot.command(text, rid=text, **OUTSIDER)
        assert await resp.read() == b""  # nothing in the ack: no title, nothing public
    await bot.command("query up", rid="query", **OUTSIDER)
    # a button's value is the client's to write: the same presses, aimed at #1 from elsewhere
    for action_id, value in [
        ("ap_ack", "1"),
        ("ap_resolve", "1"),
        ("ap_escalate", "1"),
        ("ap_rerun", "1"),
        ("ap_silence", "1:4h"),
    ]:
        await bot.press(action_id, value, rid=action_id, **OUTSIDER)
    resp = await bot.command("list", rid="list", **OUTSIDER)
    await bot.settle()

    elsewhere = "from here: an incident is handled in its own channel, and only responders"
    for rid, verb in [
        ("show 1", "see"),
        ("ack 1", "acknowledge"),
        ("silence 1 30d", "silence"),
        ("silence 1 resolved", "silence"),
        ("resolve 1", "resolve"),
        ("ap_ack", "acknowledge"),
        ("ap_resolve", "resolve"),
        ("ap_escalate", "escalate"),
        ("ap_rerun", "re-run diagnostics of"),
        ("ap_silence", "silence"),
    ]:
        answer = ephemeral(fake_slack, rid)
        assert answer.startswith(f":no_entry: You cannot {verb} #1 {elsewhere}"), (rid, answer)
        assert "HighErrorRate" not in answer
    refused = "is not open to you here" if people else "is off"
    assert ephemeral(fake_slack, "query").startswith(f":no_entry: `query` {refused}")
    listed = ephemeral(fake_slack, "list")
    assert listed.startswith(":sunny: No open incidents in this channel.")
    assert "responders only" in listed and "HighErrorRate" not in listed

    # Slack: only the private answers, and one look at the responders group if there is one
    made = {r.path for r in fake_slack.requests[seen:] if not r.path.startswith("/response/")}
    assert made == ({"/api/usergroups.users.list"} if people else set())
    assert fake_slack.messages[(SRE, before.data["slack"]["ts"])] == message
    assert fake_slack.ephemerals == []
    # the store: nothing changed
    after = await bot.incident()
    assert after.status is Status.TRIGGERED and after.acknowledged_by is None
    assert [e.id for e in after.timeline] == [e.id for e in before.timeline]
    assert "silences" not in after.data
    assert after.data["pagerduty"] == before.data["pagerduty"]
    # the log: one line for each refusal, saying who, where, what and which incident
    commands = ["show", "ack", "silence", "silence", "resolve", "query"]
    commands += ["ack", "resolve", "escalate", "rerun", "silence"]
    assert sorted(refusals(caplog)) == sorted(
        (c, "U0MALLORY", ELSEWHERE, None if c == "query" else 1) for c in commands
    )
    # and the escalation the outsider tried to stop still pages at 5 minutes
    assert fake_pagerduty.events == []
    bot.clock.advance(300)
    await bot.settle()
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]


# -- what stays allowed -----------------------------------------------------------------


async def test_anyone_in_the_incidents_own_channel_acts_as_before(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    here = {"user": "U0BOB", "name": "bob", "channel": SRE, "channel_name": "sre"}
    resp = await bot.command("show 1", rid="show", **here)
    shown = ack_json(await resp.read())
    assert shown["response_type"] == "ephemeral"
    assert "#1 HighErrorRate (service=checkout)" in message_text(shown)
    resp = await bot.command("list", rid="list", **here)
    assert "*#1* P1 triggered · HighErrorRate" in ack_json(await resp.read())["text"]

    await bot.command("ack 1", rid="ack", **here)
    await bot.settle()
    assert ephemeral(fake_slack, "ack") == ":eyes: You acknowledged #1."
    assert (await bot.incident()).acknowledged_by == "@bob (U0BOB)"
    await bot.press("ap_resolve", "1", rid="resolve", **here)  # the button on its message
    await bot.settle()
    assert ephemeral(fake_slack, "resolve") == ":white_check_mark: You resolved #1."
    assert (await bot.incident()).status is Status.RESOLVED
    assert fake_slack.calls("usergroups.users.list") == []  # the channel was enough
    bot.clock.advance(300)
    await bot.settle()
    assert fake_pagerduty.events == []  # acknowledged in time: nobody paged


async def test_a_responder_acts_from_any_channel_and_a_group_is_read_once(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, responders=["U0RESP", "S0ONCALL"]
    )
    fake_slack.set_usergroup("S0ONCALL", ["U0CAROL"])
    resp = {"user": "U0RESP", "name": "rita", "channel": ELSEWHERE, "channel_name": "random"}
    carol = {"user": "U0CAROL", "name": "carol", "channel": "D0CAROL", "channel_name": "dm"}

    assert await (await bot.command("show 1", rid="show", **resp)).read() == b""
    await bot.command("list", rid="list", **carol)
    await bot.settle()
    [shown] = fake_slack.responses["show"]
    assert shown["response_type"] == "ephemeral"
    assert "#1 HighErrorRate (service=checkout)" in message_text(shown)
    assert "Latest events" in message_text(shown)
    listed = ephemeral(fake_slack, "list")
    assert "*#1* P1 triggered · HighErrorRate" in listed and "responders only" not in listed

    await bot.command("ack 1", rid="ack", **resp)
    await bot.settle()
    assert ephemeral(fake_slack, "ack") == ":eyes: You acknowledged #1."
    await bot.press("ap_resolve", "1", rid="resolve", **carol)
    await bot.settle()
    assert ephemeral(fake_slack, "resolve") == ":white_check_mark: You resolved #1."
    incident = await bot.incident()
    assert incident.status is Status.RESOLVED
    assert [e.actor for e in incident.timeline if e.kind == EventKind.RESOLVED] == [
        "@carol (U0CAROL)"
    ]
    [lookup] = fake_slack.calls("usergroups.users.list")  # cached for the second question
    assert lookup.params["usergroup"] == "S0ONCALL"


async def test_a_responder_group_slack_cannot_read_refuses(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, responders=["S0GONE"]
    )
    await bot.command("ack 1", rid="ack", **OUTSIDER)
    await bot.settle()
    assert "could not be checked; try again" in ephemeral(fake_slack, "ack")
    assert (await bot.incident()).status is Status.TRIGGERED


# -- silences -----------------------------------------------------------------------------


async def test_a_silence_longer_than_the_cap_is_refused_and_named(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In the incident's own channel, by a responder even: 30 days is over the default
    cap of a day, and nothing reaches Alertmanager (none is running here)."""
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    here = {"channel": SRE, "channel_name": "sre"}
    await bot.command("silence 1 30d", rid="long", **here)
    await bot.command("silence 1 25h", rid="longer", **here)
    await bot.settle()
    assert ephemeral(fake_slack, "long") == (
        ":no_entry: A silence from Slack lasts at most 1d (slack.max_silence): ask for 1d "
        "or less, or silence in Alertmanager itself."
    )
    assert ephemeral(fake_slack, "longer").startswith(":no_entry: A silence from Slack lasts")
    assert "silences" not in (await bot.incident()).data
    assert sorted(refusals(caplog)) == [("silence", "U0ALICE", SRE, 1)] * 2


async def test_the_silence_menu_offers_only_what_the_cap_allows(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_slack, fake_pagerduty, max_silence="2h")
    ts = (await bot.incident()).data["slack"]["ts"]
    [menu] = [
        e
        for b in fake_slack.messages[(SRE, ts)]["blocks"]
        if b.get("type") == "actions"
        for e in b["elements"]
        if e.get("action_id") == "ap_silence"
    ]
    assert [o["value"] for o in menu["options"]] == ["1:1h", "1:resolved"]


# -- query --------------------------------------------------------------------------------


async def test_query_is_off_unless_configured(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    await post_signed(client, command_body("query up", fake_slack, rid="q"))
    await settle_due(client)
    [answer] = texts(fake_slack, "q")
    assert answer == (
        ":no_entry: `query` is off: ad-hoc PromQL is open only to slack.query_users and in "
        "slack.query_channels, and neither is configured."
    )


async def test_query_for_listed_users_and_channels_only(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    settings = slack_settings(tmp_path, fake_slack, query_users=["S0SRE"], query_channels=["C0OPS"])
    fake_slack.set_usergroup("S0SRE", ["U0CAROL"])
    client = await start(aiohttp_client, settings)
    asks = {
        "ops": command_body("query up", fake_slack, rid="ops", channel="C0OPS"),
        "carol": command_body("query up", fake_slack, rid="carol", user="U0CAROL", name="carol"),
        "alice": command_body("query up", fake_slack, rid="alice"),
    }
    for body in asks.values():
        await post_signed(client, body)
    await settle_due(client)
    # the two allowed reach Prometheus (not running here); the third is refused
    assert texts(fake_slack, "ops")[0].startswith(":warning: Prometheus unavailable")
    assert texts(fake_slack, "carol")[0].startswith(":warning: Prometheus unavailable")
    assert texts(fake_slack, "alice") == [
        ":no_entry: `query` is not open to you here: ad-hoc PromQL is for slack.query_users, "
        "and in slack.query_channels."
    ]
    assert CHANNEL not in {f.channel for f in fake_slack.files.values()}
