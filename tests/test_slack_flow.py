"""The whole Slack flow: webhook -> message -> thread events -> signed button -> resolved."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from bot import keys
from bot.core.incidents import EventKind, Status
from conftest import payload
from fakes import FakeSlack
from slackkit import (
    CHANNEL,
    action_body,
    action_ids,
    message_text,
    post_signed,
    settle,
    slack_settings,
    start,
    texts,
)

MENTION = re.compile(r"<!(here|channel|everyone|subteam)|<@")
# where the captured alerts' links point: their Prometheus and Alertmanager, the wiki
LINKED = {
    "prometheus": {"external_url": "http://prometheus.example.com:9090"},
    "alertmanager": {"external_url": "http://alertmanager.example.com:9093"},
    "links": {"allowed_urls": ["https://runbooks.example.com"]},
}


def only_message(fake: FakeSlack, channel: str = CHANNEL) -> tuple[str, dict[str, Any]]:
    top = [
        (ts, m) for (ch, ts), m in fake.messages.items() if ch == channel and "thread_ts" not in m
    ]
    assert len(top) == 1, top
    return top[0]


async def test_full_flow_message_thread_ack_button_and_resolve(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack, sections=LINKED))
    resp = await client.post("/alertmanager", json=payload("captured-firing"))
    assert resp.status == 200
    await settle(client)

    # one message, in the default channel, telling the incident at a glance
    ts, message = only_message(fake_slack)
    shown = message_text(message)
    assert "P1 · TRIGGERED" in shown
    assert "#1 HighErrorRate (service=checkout)" in shown
    assert "3 firing of 3" in shown
    assert "`service=checkout`" in shown and "`instance=pod-a`" in shown
    assert "<https://runbooks.example.com/checkout/high-error-rate|Runbook>" in shown
    assert "<http://prometheus.example.com:9090/graph?g0.expr=" in shown
    assert "|Prometheus graph>" in shown and "hidden" not in shown
    assert "<http://alertmanager.example.com:9093|Alertmanager>" in shown
    assert action_ids(message)[:3] == ["ap_ack", "ap_resolve", "ap_escalate"]
    post = fake_slack.calls("chat.postMessage")[0]
    assert post.params["channel"] == CHANNEL and "thread_ts" not in post.params
    store = client.app[keys.STORE]
    incident = await store.get_incident(1)
    assert incident.data["slack"]["channel"] == CHANNEL
    assert incident.data["slack"]["ts"] == ts
    assert incident.data["slack"]["permalink"].startswith("https://fake.slack.com/archives/")

    # diagnostics finish: the message shows them, the thread gets a summary
    diagnostics = [
        {"name": "error_share", "label": "5xx share", "status": "ok", "value": 0.125,
         "passed": False, "text": "12.5% of requests fail"},
        {"name": "db_up", "label": "database up", "status": "ok", "value": 1,
         "passed": True, "text": "database answers"},
    ]  # fmt: skip
    clock = client.app[keys.CLOCK]
    await store.update_incident(1, now=clock.now(), data={"diagnostics": diagnostics})
    await store.append_event(
        1, actor="alertpilot", kind=EventKind.DIAGNOSTICS_DONE, message="2 diagnostics",
        now=clock.now(),
    )  # fmt: skip
    await settle(client)
    thread = fake_slack.thread(CHANNEL, ts)
    replies = [m["text"] for m in thread[1:]]
    # the graph: Prometheus (127.0.0.1:9, nothing there) could not list its rules
    assert any("Graph not drawn: Prometheus did not list its alerting rules" in r for r in replies)
    assert any(
        "Diagnostics done: 1 failed (error_share), 1 passed" in r and "5xx share" in r
        for r in replies
    )
    shown = message_text(fake_slack.messages[(CHANNEL, ts)])
    assert "*Diagnostics*: 1 failed (error_share), 1 passed" in shown
    assert ":x: *5xx share*: 12.5% of requests fail" in shown
    assert ":white_check_mark: *database up*: database answers" in shown

    # a signed Acknowledge press: audited with the Slack user, reflected in the message
    resp = await post_signed(client, action_body("ap_ack", "1", fake_slack, rid="press"))
    assert resp.status == 200
    await settle(client)
    incident = await store.get_incident(1)
    assert incident.status is Status.ACKNOWLEDGED
    assert incident.acknowledged_by == "@alice (U0ALICE)"
    ack = [e for e in incident.timeline if e.kind == EventKind.ACKNOWLEDGED]
    assert ack[0].actor == "@alice (U0ALICE)" and ack[0].data["source"] == "slack"
    assert texts(fake_slack, "press") == [":eyes: You acknowledged #1."]
    message = fake_slack.messages[(CHANNEL, ts)]
    shown = message_text(message)
    assert "P1 · ACKNOWLEDGED" in shown and "Acknowledged by @alice (U0ALICE)" in shown
    assert "ap_ack" not in action_ids(message)
    replies = [m["text"] for m in fake_slack.thread(CHANNEL, ts)[1:]]
    assert any("acknowledged by @alice (U0ALICE) in Slack" in r for r in replies)

    # the resolved webhook: the message shows it resolved, buttons gone, thread says so
    resp = await client.post("/alertmanager", json=payload("captured-resolved"))
    assert resp.status == 200
    await settle(client)
    message = fake_slack.messages[(CHANNEL, ts)]
    shown = message_text(message)
    assert "P1 · RESOLVED" in shown and "~#1 HighErrorRate (service=checkout)~" in shown
    assert ":white_check_mark: *Resolved*" in shown
    assert action_ids(message) == []
    assert any("all alerts resolved" in m["text"] for m in fake_slack.thread(CHANNEL, ts)[1:])
    # one message for the incident, ever: everything else was an update or a reply
    assert len(only_message(fake_slack)) == 2
    updates = fake_slack.calls("chat.update")
    assert updates and all(u.params["ts"] == ts for u in updates)


async def test_reopened_incident_links_the_previous_message(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)
    await client.post("/alertmanager", json=payload("captured-resolved"))
    await settle(client)
    again = payload("captured-firing")
    for alert in again["alerts"]:
        alert["startsAt"] = "2026-11-21T06:00:00Z"
    await client.post("/alertmanager", json=again)
    await settle(client)

    store = client.app[keys.STORE]
    first, second = await store.get_incident(1), await store.get_incident(2)
    assert second.previous_id == 1
    new_message = fake_slack.messages[(CHANNEL, second.data["slack"]["ts"])]
    link = first.data["slack"]["permalink"]
    assert f"<{link}|incident #1>" in message_text(new_message)
    old_thread = fake_slack.thread(CHANNEL, first.data["slack"]["ts"])
    assert any("fired again as" in m["text"] and "#2" in m["text"] for m in old_thread[1:])


async def test_routes_pick_the_channel_first_match_wins(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    routes = [
        {"match": ['service="payments"'], "channel": "C0PAY"},
        {"match": ['service="checkout"', 'severity="critical"'], "channel": "C0SHOP"},
        {"match": ['namespace="shop"'], "channel": "C0NEVER"},
    ]
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack, routes=routes))
    await client.post("/alertmanager", json=payload("captured-firing"))
    other = copy.deepcopy(payload("captured-firing"))
    other["groupKey"] = '{}:{alertname="Other"}'
    other["groupLabels"] = {"alertname": "Other"}
    other["commonLabels"] = {"alertname": "Other", "severity": "warning"}
    for alert in other["alerts"]:
        alert["labels"] = {"alertname": "Other", "instance": alert["labels"]["instance"]}
        alert["fingerprint"] = "f" + alert["fingerprint"][1:]
    await client.post("/alertmanager", json=other)
    await settle(client)
    channels = sorted(c.params["channel"] for c in fake_slack.calls("chat.postMessage")
                      if "thread_ts" not in c.params)  # fmt: skip
    assert channels == ["C0ALERTS", "C0SHOP"]


async def test_p3_posts_without_mentions_and_p1_mentions_as_configured(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    settings = slack_settings(tmp_path, fake_slack, mentions={"P1": ["here", "S0ONCALL"]})
    client = await start(aiohttp_client, settings)
    await client.post("/alertmanager", json=payload("captured-firing"))
    quiet = payload("captured-firing")
    quiet["groupKey"] = '{}:{alertname="Quiet"}'
    quiet["commonLabels"] = {**quiet["commonLabels"], "severity": "info"}
    for alert in quiet["alerts"]:
        alert["labels"] = {**alert["labels"], "severity": "info", "alertname": "Quiet"}
    quiet["commonLabels"]["alertname"] = quiet["groupLabels"]["alertname"] = "Quiet"
    await client.post("/alertmanager", json=quiet)
    await settle(client)
    calls = fake_slack.calls("chat.postMessage")
    posts = {
        json.dumps(c.params.get("text")): c.params for c in calls if "thread_ts" not in c.params
    }
    loud = next(p for p in posts.values() if "HighErrorRate" in p["text"])
    calm = next(p for p in posts.values() if "Quiet" in p["text"])
    assert loud["text"].startswith("<!here> <!subteam^S0ONCALL> P1 TRIGGERED")
    assert calm["text"].startswith("P3 TRIGGERED")
    assert not MENTION.search(message_text(calm))
    for post in (loud, calm):  # nothing in the text becomes a mention or an unfurl
        assert post["link_names"] in ("0", 0, False, "false")
        assert post["unfurl_links"] in ("0", 0, False, "false")


async def test_a_documented_block_actions_payload_acknowledges(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    from urllib.parse import urlencode

    from conftest import FIXTURES

    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack, graphs=False))
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)
    ts, _ = only_message(fake_slack)
    raw = (FIXTURES / "slack" / "block-actions-acknowledge.json").read_text()
    filled = (
        raw.replace("@CHANNEL@", CHANNEL)
        .replace("@MESSAGE_TS@", ts)
        .replace("@RESPONSE_URL@", fake_slack.response_url("documented"))
    )
    body = urlencode({"payload": json.dumps(json.loads(filled))}).encode()
    resp = await post_signed(client, body)
    assert resp.status == 200
    await settle(client)
    incident = await client.app[keys.STORE].get_incident(1)
    assert incident.status is Status.ACKNOWLEDGED
    assert incident.acknowledged_by == "@grace (U045VRZFT)"
    assert texts(fake_slack, "documented") == [":eyes: You acknowledged #1."]


def test_a_reply_record_reads_what_every_version_wrote() -> None:
    from bot.slack.notifier import ReplyPost

    assert ReplyPost.load(None) is None
    assert ReplyPost.load("posting since 12.5") == ReplyPost(started=12.5)
    assert ReplyPost.load("1700000000.000100") == ReplyPost(ts="1700000000.000100")
    for record in (ReplyPost(started=3.0), ReplyPost(ts="1.2")):
        assert ReplyPost.load(record.dump()) == record


async def test_the_matched_playbooks_runbook_and_checklist_go_to_the_thread_once(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """What only people can do (the call, the status page) is posted where they work, the
    incident's thread, when the playbook matches; a re-run changes nothing."""
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "checkout.yaml").write_text(
        "playbooks:\n"
        "  - name: checkout-errors\n"
        "    match: ['alertname=\"HighErrorRate\"']\n"
        "    runbook: |\n"
        "      People do these; alertpilot cannot:\n"
        "      - [ ] Open the incident call <!channel>.\n"
        "      - [ ] Post on the status page within 15 minutes.\n"
    )
    sections = {**LINKED, "playbooks": {"paths": [str(books)]}}
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack, sections=sections))
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)
    incident = await client.app[keys.STORE].get_incident(1)
    assert incident.playbook == "checkout-errors"
    replies = [
        call.params["text"]
        for call in fake_slack.calls("chat.postMessage")
        if call.params.get("thread_ts") == incident.data["slack"]["ts"]
    ]
    runbooks = [text for text in replies if "Runbook: checkout-errors" in text]
    assert len(runbooks) == 1, replies
    assert "- [ ] Post on the status page within 15 minutes." in runbooks[0]
    assert "&lt;!channel&gt;" in runbooks[0] and not MENTION.search(runbooks[0])
    # the match again (a re-run): no second copy
    await client.app[keys.PIPELINE].rerun_diagnostics(1, "ada")
    await settle(client)
    again = [c for c in fake_slack.calls("chat.postMessage") if "Runbook:" in c.params["text"]]
    assert len(again) == 1
