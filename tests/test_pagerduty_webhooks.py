"""POST /pagerduty: PagerDuty's Webhooks v3 signature scheme (rotation, tampering, missing
or wrong secrets), each handled event type, idempotency, and the full flow with Slack."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Status
from bot.pagerduty.webhooks import verify_signature
from conftest import FIXTURES
from fakes import FakePagerDuty, FakeSlack, pd_ref, sign_v3
from pagerduty_kit import OLD_SECRET, SECRET, Bot, alert_group, start_bot


async def paged_bot(
    aiohttp_client: Any,
    tmp_path: Path,
    fake: FakePagerDuty,
    *,
    clock: ManualClock | None = None,
    **settings: Any,
) -> Bot:
    bot = await start_bot(aiohttp_client, tmp_path, fake, clock or ManualClock(), **settings)
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    assert len(fake.events) == 1
    return bot


def test_signature_scheme() -> None:
    body = b'{"event": {}}'
    assert verify_signature(body, sign_v3(body, [SECRET]), SECRET)
    assert verify_signature(body, sign_v3(body, [OLD_SECRET, SECRET]), SECRET)
    assert verify_signature(body, sign_v3(body, [SECRET, OLD_SECRET]), SECRET)
    assert not verify_signature(body, sign_v3(body, [OLD_SECRET]), SECRET)
    assert not verify_signature(body + b" ", sign_v3(body, [SECRET]), SECRET)
    assert not verify_signature(body, None, SECRET)
    assert not verify_signature(body, "", SECRET)
    v1 = sign_v3(body, [SECRET])
    assert not verify_signature(body, v1.replace("v1=", "v0="), SECRET)
    assert not verify_signature(body, "v1=", SECRET)
    assert not verify_signature(body, v1, "")


async def test_signed_requests_only(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty)
    incident = await bot.incident()
    ack = bot.event("incident.acknowledged", "PINC001", incident.key, "Ada Lovelace")
    raw = json.dumps(ack).encode()
    tampered = raw.replace(b"Ada Lovelace", b"Eve Mallory")
    refused = [
        await bot.webhook(ack, secrets=[OLD_SECRET]),  # wrong secret
        await bot.webhook(ack, signature=""),  # missing header
        await bot.webhook(ack, body=tampered, signature=sign_v3(raw, [SECRET])),
        await bot.webhook(ack, body=b"not json", signature=sign_v3(raw, [SECRET])),
    ]
    assert [status for status, _ in refused] == [401, 401, 401, 401]
    await bot.settle()
    assert (await bot.incident()).status is Status.TRIGGERED

    # during a rotation PagerDuty signs with the old and the new secret: either matches
    status, answer = await bot.webhook(ack, secrets=[OLD_SECRET, SECRET])
    assert (status, answer["status"]) == (200, "applied")
    assert (await bot.incident()).status is Status.ACKNOWLEDGED


async def test_a_signed_but_malformed_body_is_a_400(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    status, answer = await bot.webhook({}, body=b'{"event": ')
    assert (status, answer["error"]) == (400, "invalid_json")
    status, answer = await bot.webhook({"event": {"event_type": "incident.acknowledged"}})
    assert status == 400 and "event.id" in answer["message"]


async def test_acknowledged_in_pagerduty_is_applied_once(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty)
    incident = await bot.incident()
    ack = bot.event("incident.acknowledged", "PINC001", incident.key, "Ada Lovelace")
    assert (await bot.webhook(ack))[1]["status"] == "applied"
    assert (await bot.webhook(ack))[1]["status"] == "duplicate"  # PagerDuty redelivers
    await bot.settle()

    incident = await bot.incident()
    assert incident.status is Status.ACKNOWLEDGED
    assert incident.acknowledged_by == "Ada Lovelace"
    [acked] = await bot.events(incident.id, EventKind.ACKNOWLEDGED)
    assert acked.message == "acknowledged by Ada Lovelace in PagerDuty"
    assert acked.data["source"] == "pagerduty"
    state = incident.data["pagerduty"]
    assert state["alert"] == "acknowledged"
    assert state["pd_incident"] == {
        "id": "PINC001",
        "number": 2,
        "html_url": "https://acme.pagerduty.com/incidents/PINC001",
    }
    assert state["html_url"] == "https://acme.pagerduty.com/incidents/PINC001"
    # PagerDuty already holds the acknowledgement: nothing is sent back
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]


async def test_unacknowledged_and_resolved_in_pagerduty(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty)
    key = (await bot.incident()).key
    for event_type in ("incident.acknowledged", "incident.unacknowledged"):
        await bot.webhook(bot.event(event_type, "PINC001", key, "Ada Lovelace"))
    await bot.settle()
    assert (await bot.incident()).status is Status.TRIGGERED
    resolved = bot.event(
        "incident.resolved", "PINC001", key, "Grace Hopper", resolve_reason="bad deploy reverted"
    )
    assert (await bot.webhook(resolved))[1]["status"] == "applied"
    await bot.settle()

    incident = await bot.incident()
    assert incident.status is Status.RESOLVED
    [done] = await bot.events(incident.id, EventKind.RESOLVED)
    assert done.message == "resolved by Grace Hopper in PagerDuty: bad deploy reverted"
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]
    assert incident.data["pagerduty"]["alert"] == "resolved"
    # the alerts resolving later change nothing in PagerDuty
    await bot.post_alert(alert_group(status="resolved"))
    await bot.settle()
    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]


async def test_reassigned_escalated_and_annotated_become_notes(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty)
    key = (await bot.incident()).key
    reassigned = bot.event(
        "incident.reassigned", "PINC001", key, "Ada Lovelace",
        assignees=[("PU1", "Grace Hopper"), ("PU2", "Alan Turing")],
    )  # fmt: skip
    escalated = bot.event(
        "incident.escalated", "PINC001", key, "PagerDuty", assignees=[("PU3", "Barbara Liskov")]
    )
    # an annotation references PagerDuty's incident only: found by the id learned above
    annotated = {
        "event": {
            "id": "01ANNOTATE",
            "event_type": "incident.annotated",
            "resource_type": "incident",
            "occurred_at": bot.event("incident.annotated")["event"]["occurred_at"],
            "agent": pd_ref("user", "PU1", "Grace Hopper"),
            "client": None,
            "data": {
                "incident": {
                    **pd_ref("incident", "PINC001", "the incident"),
                    "type": "incident_reference",
                },
                "id": "PNOTE01",
                "content": "rolling back the 10:02 deploy",
                "trimmed": False,
                "type": "incident_note",
            },
        }
    }  # fmt: skip
    for event in (reassigned, escalated, annotated):
        status, answer = await bot.webhook(event)
        assert (status, answer["status"]) == (200, "applied")
    await bot.settle()

    incident = await bot.incident()
    notes = [e.message for e in await bot.events(incident.id, EventKind.NOTE)]
    assert "reassigned in PagerDuty to Grace Hopper, Alan Turing by Ada Lovelace" in notes
    assert "escalated in PagerDuty (Default) to Barbara Liskov" in notes
    assert "note in PagerDuty by Grace Hopper: rolling back the 10:02 deploy" in notes
    # PagerDuty's own escalation is not ours: no incident.escalated, no second trigger
    assert await bot.events(incident.id, EventKind.ESCALATED) == []
    assert len(fake_pagerduty.events) == 1
    assert incident.status is Status.TRIGGERED


async def test_unknown_types_and_foreign_incidents_are_ignored_with_200(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty)
    unknown = bot.event("incident.priority_updated", "PINC001", (await bot.incident()).key)
    assert await bot.webhook(unknown) == (
        200,
        {"status": "ignored", "event": unknown["event"]["id"]},
    )
    occurred_at = unknown["event"]["occurred_at"]
    service = {
        "event": {
            "id": "01SVC",
            "event_type": "service.updated",
            "occurred_at": occurred_at,
            "data": {"id": "PSVC"},
        }
    }
    assert (await bot.webhook(service))[1]["status"] == "ignored"
    foreign = bot.event("incident.acknowledged", "POTHER", "someone-elses-key", "Ada")
    assert (await bot.webhook(foreign))[1]["status"] == "not_ours"
    await bot.settle()
    assert (await bot.incident()).status is Status.TRIGGERED

    metrics = await (await bot.client.get("/metrics")).text()
    assert (
        'alertpilot_pagerduty_webhooks_total{event_type="other",outcome="ignored"} 2.0' in metrics
    )
    assert (
        'alertpilot_pagerduty_webhooks_total{event_type="incident.acknowledged",outcome="not_ours"}'
        " 1.0" in metrics
    )


async def test_no_webhook_secret_refuses_everything(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, ManualClock(), pagerduty={"webhook_secret": ""}
    )
    status, _ = await bot.webhook(bot.event("incident.acknowledged"))
    assert status == 401


@pytest.fixture
async def slack() -> Any:
    async with FakeSlack() as fake:
        yield fake


async def test_full_flow_alert_slack_page_ack_in_pagerduty_resolve(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty, slack: FakeSlack
) -> None:
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        slack={
            "bot_token": slack.token,
            "signing_secret": "slack-signing-secret",
            "api_url": slack.base_url,
            "default_channel": "C0ALERTS",
        },
    )
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    incident = await bot.incident()
    [post] = slack.calls("chat.postMessage")[:1]
    [trigger] = fake_pagerduty.events
    assert trigger["dedup_key"] == incident.key
    permalink = incident.data["slack"]["permalink"]
    assert {"href": permalink, "text": "Slack thread"} in trigger["links"]

    ack = bot.event("incident.acknowledged", "PINC777", incident.key, "Ada Lovelace")
    updates_before = len(slack.calls("chat.update"))
    assert (await bot.webhook(ack))[0] == 200
    await bot.settle()
    incident = await bot.incident()
    assert incident.status is Status.ACKNOWLEDGED
    assert "acknowledged by Ada Lovelace in PagerDuty" in [e.message for e in incident.timeline]
    updates = slack.calls("chat.update")[updates_before:]
    assert updates, "the Slack message was not updated"
    assert any(b"Ada Lovelace" in u.raw for u in updates)
    assert post.params["channel"] == "C0ALERTS"

    await bot.post_alert(alert_group(status="resolved"))
    await bot.settle()
    assert (await bot.incident()).status is Status.RESOLVED
    assert [(e["event_action"], e["dedup_key"]) for e in fake_pagerduty.events] == [
        ("trigger", incident.key),
        ("resolve", incident.key),
    ]


async def test_our_own_ack_and_resolve_echoed_back_by_pagerduty_change_nothing(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty)
    incident = await bot.incident()
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.settle()
    # PagerDuty reports the acknowledgement alertpilot just sent (its agent: the service)
    echo = bot.event("incident.acknowledged", "PINC001", incident.key, "Checkout API")
    assert (await bot.webhook(echo))[1]["status"] == "already acknowledged"
    await bot.actions.resolve(incident.id, actor="ada", source="slack")
    await bot.settle()
    echo = bot.event("incident.resolved", "PINC001", incident.key, "Checkout API")
    assert (await bot.webhook(echo))[0] == 200
    await bot.settle()

    incident = await bot.incident()
    assert incident.acknowledged_by == "ada"
    assert len(await bot.events(incident.id, EventKind.ACKNOWLEDGED)) == 1
    assert len(await bot.events(incident.id, EventKind.RESOLVED)) == 1
    assert [e["event_action"] for e in fake_pagerduty.events] == [
        "trigger",
        "acknowledge",
        "resolve",
    ]


async def test_a_documented_v3_delivery_is_applied_as_it_comes(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    # the delivery comes a minute after the event it records occurred
    clock = ManualClock(datetime(2026, 11, 21, 5, 15, 20, tzinfo=UTC).timestamp())
    bot = await paged_bot(aiohttp_client, tmp_path, fake_pagerduty, clock=clock)
    incident = await bot.incident()
    raw = (FIXTURES / "pagerduty" / "webhook-v3-incident-acknowledged.json").read_text()
    body = raw.replace("@INCIDENT_KEY@", incident.key).encode()
    status, answer = await bot.webhook({}, body=body)
    assert (status, answer["status"]) == (200, "applied")
    await bot.settle()
    incident = await bot.incident()
    assert (incident.status, incident.acknowledged_by) == (Status.ACKNOWLEDGED, "Ada Lovelace")
    assert incident.data["pagerduty"]["pd_incident"]["number"] == 4711
