"""Signed slash commands and buttons: verification, every subcommand, approvals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.app import create_app
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Status
from bot.store.base import Store
from conftest import make_settings, payload
from fakes import FakePagerDuty, FakeSlack
from pagerduty_kit import pd_section
from slackkit import (
    CHANNEL,
    action_body,
    action_ids,
    command_body,
    message_text,
    post_signed,
    settle,
    settle_due,
    signed,
    slack_settings,
    start,
    texts,
)


class Engine:
    """A small remediation engine: approve/reject/pending over the incident's approvals."""

    def __init__(self, store: Store, clock: Any) -> None:
        self.store, self.clock = store, clock
        self.decisions: list[tuple[int, str, str, str, str]] = []

    async def pending(self, incident_id: int) -> list[str]:
        incident = await self.store.get_incident(incident_id, timeline=False)
        approvals = incident.data.get("approvals") or {}
        return [k for k, v in approvals.items() if v["state"] == "pending"]

    async def _decide(
        self, incident_id: int, step: str, state: str, actor: str, source: str
    ) -> None:
        if step not in await self.pending(incident_id):
            raise LookupError(f"step {step!r} is not waiting for approval")
        incident = await self.store.get_incident(incident_id, timeline=False)
        approvals = {**incident.data["approvals"], step: {"step": step, "state": state}}
        now = self.clock.now()
        await self.store.update_incident(incident_id, now=now, data={"approvals": approvals})
        await self.store.append_event(
            incident_id, actor=actor, kind=EventKind.APPROVAL, now=now,
            message=f"{step} {state} by {actor}", data={"step": step, "source": source},
        )  # fmt: skip
        self.decisions.append((incident_id, step, state, actor, source))

    async def approve(self, incident_id: int, step: str, *, actor: str, source: str) -> None:
        await self._decide(incident_id, step, "approved", actor, source)

    async def reject(self, incident_id: int, step: str, *, actor: str, source: str) -> None:
        await self._decide(incident_id, step, "rejected", actor, source)


async def opened(client: Any) -> None:
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)


def ack_json(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


# -- verification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Request-Timestamp": "1800000000"},
        {"X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
    ],
)
async def test_missing_or_malformed_signature_headers_are_401(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, headers: dict[str, str]
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    await opened(client)
    resp = await client.post(
        "/slack/events", data=action_body("ap_ack", "1", fake_slack), headers=headers
    )
    assert resp.status == 401
    await settle(client)
    assert (await client.app[keys.STORE].get_incident(1)).status is Status.TRIGGERED


async def test_bad_signature_and_replayed_timestamp_are_401_with_no_side_effect(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    settings = slack_settings(tmp_path, fake_slack, graphs=False)  # no retries to wait for
    client = await start(aiohttp_client, settings, clock)
    await opened(client)
    body = command_body("ack 1", fake_slack)
    wrong = signed(body, secret="not-the-secret", timestamp=clock.now())
    assert (await client.post("/slack/events", data=body, headers=wrong)).status == 401
    tampered = signed(body, timestamp=clock.now())
    evil = command_body("resolve 1", fake_slack)
    assert (await client.post("/slack/events", data=evil, headers=tampered)).status == 401
    captured = signed(body, timestamp=clock.now())
    clock.advance(301)  # the same request, replayed more than 5 minutes later
    assert (await client.post("/slack/events", data=body, headers=captured)).status == 401
    await settle(client)
    assert (await client.app[keys.STORE].get_incident(1)).status is Status.TRIGGERED
    assert fake_slack.responses == {}
    # and the genuine article, fresh, works
    resp = await client.post(
        "/slack/events", data=body, headers=signed(body, timestamp=clock.now())
    )
    assert resp.status == 200
    await settle(client)
    assert (await client.app[keys.STORE].get_incident(1)).status is Status.ACKNOWLEDGED


# -- slash command ----------------------------------------------------------------------


async def test_a_button_value_no_menu_offered_is_refused_and_escaped(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """A button's value comes back from the client: a silence length the menu never
    offered gets the slash command's bounds, and a value that is markup is shown as text."""
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)
    for n, (action, value, problem) in enumerate(
        [
            ("ap_silence", "1:10000d", "A silence from Slack lasts at most 1d (slack.max_silence)"),
            ("ap_silence", "1:1s", "a silence lasts at least 1m"),
            ("ap_silence", "1:<!channel>", "&lt;!channel&gt; is not a duration"),
            ("ap_approve", "<!here>", "malformed button value &lt;!here&gt;"),
        ]
    ):
        body = action_body(action, value, fake_slack, select=action == "ap_silence", rid=f"r{n}")
        assert (await post_signed(client, body)).status == 200
        await settle(client)
        [answer] = texts(fake_slack, f"r{n}")
        assert problem in answer, (value, answer)
        assert "<!" not in answer
    incident = await client.app[keys.STORE].get_incident(1)
    assert "silences" not in incident.data  # nothing was silenced


async def test_help_unknown_and_bad_arguments_answer_usage(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    for text, problem in [
        ("help", None),
        ("", None),
        ("frobnicate 1", "unknown subcommand frobnicate"),
        ("ack", "expected `ack ID`"),
        ("ack twelve", "twelve is not an incident id"),
        ("silence 1 forever", "forever is not a duration"),
        ("silence 1 10s", "a silence lasts at least 1m"),
        ("approve 1", "expected `approve ID STEP`"),
        ("query", "expected `query PROMQL`"),
        ("list everything", "`list` takes no arguments"),
    ]:
        resp = await post_signed(client, command_body(text, fake_slack))
        assert resp.status == 200
        answer = ack_json(await resp.read())
        assert answer["response_type"] == "ephemeral"
        assert "`/alertpilot silence ID DURATION`" in answer["text"], text
        if problem:
            assert problem in answer["text"], (text, answer["text"])
    assert fake_slack.responses == {}


async def test_list_show_ack_resolve(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    await opened(client)
    answer = ack_json(await (await post_signed(client, command_body("list", fake_slack))).read())
    assert "1 open incident(s)" in answer["text"]
    assert "*#1* P1 triggered · HighErrorRate (service=checkout)" in answer["text"]

    resp = await post_signed(client, command_body("show #1", fake_slack))
    shown = message_text(ack_json(await resp.read()))
    assert "#1 HighErrorRate (service=checkout)" in shown and "Latest events" in shown
    assert "incident.opened" in shown
    resp = await post_signed(client, command_body("show 99", fake_slack))
    assert "There is no incident #99." in ack_json(await resp.read())["text"]

    resp = await post_signed(client, command_body("ack 1", fake_slack, rid="ack"))
    assert resp.status == 200 and await resp.read() == b""  # acked at once, answered later
    await settle(client)
    assert texts(fake_slack, "ack") == [":eyes: You acknowledged #1."]
    await post_signed(client, command_body("ack 1", fake_slack, rid="ack2", name="bob"))
    await settle(client)
    assert texts(fake_slack, "ack2") == ["#1 is already acknowledged by @alice (U0ALICE)."]

    await post_signed(client, command_body("resolve 1", fake_slack, rid="res"))
    await settle(client)
    assert texts(fake_slack, "res") == [":white_check_mark: You resolved #1."]
    incident = await client.app[keys.STORE].get_incident(1)
    assert incident.status is Status.RESOLVED
    resolved = [e for e in incident.timeline if e.kind == EventKind.RESOLVED]
    assert resolved[0].actor == "@alice (U0ALICE)"
    answer = ack_json(await (await post_signed(client, command_body("list", fake_slack))).read())
    assert answer["text"] == ":sunny: No open incidents."
    await post_signed(client, command_body("ack 7", fake_slack, rid="missing"))
    await settle(client)
    assert texts(fake_slack, "missing") == [":warning: no incident #7"]


async def test_silence_when_alertmanager_is_down_says_so_and_changes_nothing(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    await opened(client)
    await post_signed(client, command_body("silence 1 4h", fake_slack, rid="s"))
    await settle(client)
    [answer] = texts(fake_slack, "s")
    assert answer.startswith(":warning: Alertmanager unavailable")
    assert "silences" not in (await client.app[keys.STORE].get_incident(1)).data


async def test_oncall_runbook_query_without_those_features(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    settings = slack_settings(tmp_path, fake_slack, query_channels=[CHANNEL])
    client = await start(aiohttp_client, settings)
    resp = await post_signed(client, command_body("oncall", fake_slack))
    assert ack_json(await resp.read())["text"] == (
        "PagerDuty is not configured, so alertpilot cannot say who is on call."
    )
    resp = await post_signed(client, command_body("runbook HighErrorRate", fake_slack))
    assert "No playbook handles the alert `HighErrorRate`" in ack_json(await resp.read())["text"]
    await post_signed(client, command_body("query up", fake_slack, rid="q"))
    await settle(client)
    [answer] = texts(fake_slack, "q")
    assert answer.startswith(":warning: Prometheus unavailable")


# -- approvals ----------------------------------------------------------------------------


async def start_with_engine(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, **slack: Any
) -> tuple[Any, Engine]:
    app = create_app(slack_settings(tmp_path, fake_slack, **slack))
    engine = Engine(app[keys.STORE], app[keys.CLOCK])
    app[keys.REMEDIATION] = engine  # type: ignore[assignment]
    client = await aiohttp_client(app)
    await opened(client)
    store, now = app[keys.STORE], app[keys.CLOCK].now()
    approvals = {"restart-pods": {"step": "restart-pods", "state": "pending"},
                 "scale-up": {"step": "scale-up", "state": "pending"}}  # fmt: skip
    await store.update_incident(1, now=now, data={"approvals": approvals})
    await store.append_event(1, actor="alertpilot", kind=EventKind.REMEDIATION, now=now,
                             message="restart-pods proposed: waiting for approval")  # fmt: skip
    await settle(client)
    return client, engine


async def test_approve_buttons_show_and_non_approvers_are_refused(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client, engine = await start_with_engine(
        aiohttp_client, tmp_path, fake_slack, approvers=["U0BOSS", "S0SRE"]
    )
    fake_slack.set_usergroup("S0SRE", ["U0CAROL"])
    ts = (await client.app[keys.STORE].get_incident(1)).data["slack"]["ts"]
    ids = action_ids(fake_slack.messages[(CHANNEL, ts)])
    assert ids.count("ap_approve") == 2 and ids.count("ap_reject") == 2

    await post_signed(client, action_body("ap_approve", "1:restart-pods", fake_slack, rid="no"))
    await post_signed(client, command_body("reject 1 scale-up", fake_slack, rid="no2"))
    await settle(client)
    assert texts(fake_slack, "no") == [
        ":no_entry: You cannot approve remediations: you are not an approver for remediations."
    ]
    assert texts(fake_slack, "no2")[0].startswith(":no_entry: You cannot reject remediations")
    assert engine.decisions == []
    refused = [e for e in (await client.app[keys.STORE].get_incident(1)).timeline
               if e.data.get("refused")]  # fmt: skip
    assert [e.actor for e in refused] == ["@alice (U0ALICE)", "@alice (U0ALICE)"]

    # a listed user, and a member of the listed user group
    await post_signed(client, action_body("ap_approve", "1:restart-pods", fake_slack,
                                          user="U0BOSS", name="boss", rid="yes"))  # fmt: skip
    await settle(client)
    await post_signed(client, command_body("reject 1 scale-up", fake_slack, user="U0CAROL",
                                           name="carol", rid="yes2"))  # fmt: skip
    await settle(client)
    assert texts(fake_slack, "yes") == ["You approved `restart-pods` on #1."]
    assert texts(fake_slack, "yes2") == ["You rejected `scale-up` on #1."]
    assert engine.decisions == [
        (1, "restart-pods", "approved", "@boss (U0BOSS)", "slack"),
        (1, "scale-up", "rejected", "@carol (U0CAROL)", "slack"),
    ]
    assert fake_slack.calls("usergroups.users.list")[0].params["usergroup"] == "S0SRE"
    message = fake_slack.messages[(CHANNEL, ts)]
    assert "ap_approve" not in action_ids(message)  # nothing pending any more
    replies = [m["text"] for m in fake_slack.thread(CHANNEL, ts)[1:]]
    assert any("restart-pods approved by @boss (U0BOSS)" in r for r in replies)


async def test_nobody_approves_when_no_approvers_are_configured(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client, engine = await start_with_engine(aiohttp_client, tmp_path, fake_slack)
    await post_signed(client, command_body("approve 1 restart-pods", fake_slack, rid="a"))
    await settle(client)
    assert texts(fake_slack, "a") == [
        ":no_entry: You cannot approve remediations: no approvers are configured (slack.approvers)."
    ]
    assert engine.decisions == []


async def test_escalate_and_rerun_buttons(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    await opened(client)
    await post_signed(client, action_body("ap_escalate", "1", fake_slack, rid="esc"))
    await post_signed(client, action_body("ap_rerun", "1", fake_slack, rid="rr"))
    await settle(client)
    assert texts(fake_slack, "esc")[0].startswith(":rotating_light: Escalation of #1 is on the")
    assert "nobody was paged" in texts(fake_slack, "esc")[0]
    assert texts(fake_slack, "rr") == [
        "Diagnostics did not run for #1: incident #1 has no playbook."
    ]
    incident = await client.app[keys.STORE].get_incident(1)
    escalated = [e for e in incident.timeline if e.kind == EventKind.ESCALATED]
    assert escalated[0].actor == "@alice (U0ALICE)" and escalated[0].data["source"] == "slack"
    ts = incident.data["slack"]["ts"]
    replies = [m["text"] for m in fake_slack.thread(CHANNEL, ts)[1:]]
    assert any(r.startswith(":rotating_light: escalated by @alice (U0ALICE)") for r in replies)


async def test_escalate_reports_what_the_pager_does(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    settings = slack_settings(tmp_path, fake_slack, graphs=False)
    paging = make_settings(tmp_path, pagerduty=pd_section(fake_pagerduty)).pagerduty
    client = await start(aiohttp_client, settings.model_copy(update={"pagerduty": paging}))
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle_due(client)  # P1: would page after 5 unacknowledged minutes
    assert fake_pagerduty.events == []
    await post_signed(client, action_body("ap_escalate", "1", fake_slack, rid="first"))
    await settle_due(client)
    assert texts(fake_slack, "first") == [
        ":rotating_light: You escalated #1: on-call is being paged."
    ]
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]

    await post_signed(client, action_body("ap_escalate", "1", fake_slack, rid="again"))
    await settle_due(client)
    assert texts(fake_slack, "again") == [
        ":rotating_light: #1 is already paged: PagerDuty holds its alert (triggered), "
        "so nobody is paged again."
    ]
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]
