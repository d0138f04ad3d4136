"""The Slack flow with a real Alertmanager in front: alerts posted to Alertmanager reach
the bot through its webhook; the bot posts one message (with diagnostics read from that
Alertmanager) and thread events to the fake Slack; a signed Acknowledge press is
reflected in the message; Alertmanager's resolved webhook turns it resolved."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from bot import keys
from bot.app import create_app
from bot.core.incidents import EventKind, Incident, Status
from bot.settings import AlertmanagerSettings, LinkSettings, PlaybookSettings
from bot.store.base import Store
from fakes import FakeSlack
from slackkit import (
    CHANNEL,
    action_body,
    action_ids,
    message_text,
    post_signed,
    settle,
    slack_settings,
    texts,
)
from stack import Alertmanager, free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
RUNBOOK = "https://runbooks.example.com/checkout/high-error-rate"
ERRORS = [
    {
        "labels": {"alertname": "HighErrorRate", "service": "checkout",
                   "severity": "critical", "instance": f"pod-{name}"},
        "annotations": {"summary": "Checkout 5xx share above 10%", "runbook_url": RUNBOOK},
        "generatorURL": "http://prometheus.example/graph?g0.expr=errors",
    }
    for name in "ab"
]  # fmt: skip
RELATED = {
    "labels": {"alertname": "CheckoutLatencyHigh", "service": "checkout", "severity": "warning"},
    "annotations": {"summary": "Checkout p95 above 3s"},
}
PLAYBOOK = [
    {
        "name": "checkout-errors",
        "match": ['alertname="HighErrorRate"'],
        "diagnostics": [
            {
                "name": "related",
                "kind": "alerts",
                "label": "Other alerts for this service",
                "expect": "== 0",
                "matchers": ["service={{ labels.service | quote }}"],
            }
        ],
        "remediations": [
            {
                "name": "silence_checkout",
                "mode": "suggest",
                "action": {
                    "kind": "silence",
                    "matchers": ["service={{ labels.service | quote }}"],
                    "duration": "1h",
                },
            }
        ],
    }
]


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 15.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def errors_incident(store: Store, predicate: Callable[[Incident], bool]) -> Incident:
    async def probe() -> Incident | None:
        for summary in await store.list_incidents():
            if summary.group_labels.get("alertname") == "HighErrorRate":
                incident = await store.get_incident(summary.id)
                return incident if predicate(incident) else None
        return None

    return await eventually(probe, "HighErrorRate incident")


def top_level(fake: FakeSlack) -> list[str]:
    """The ts of every channel message (not a thread reply) about the HighErrorRate group."""
    return [
        ts
        for (channel, ts), m in fake.messages.items()
        if channel == CHANNEL and "thread_ts" not in m and "HighErrorRate" in m["text"]
    ]


def replies(fake: FakeSlack, ts: str) -> list[str]:
    return [str(m.get("text", "")) for m in fake.thread(CHANNEL, ts)[1:]]


async def test_real_alertmanager_to_slack_message_thread_ack_button_and_resolved_webhook(
    tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any, fake_slack: FakeSlack
) -> None:
    started = time.monotonic()
    book = tmp_path / "checkout.yaml"
    book.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    port = free_port()  # the bot's, so Alertmanager can be told where to deliver
    async with Alertmanager(tmp_path, f"http://127.0.0.1:{port}/alertmanager") as am:
        base = slack_settings(tmp_path, fake_slack, graphs=False)  # no Prometheus here
        settings = base.model_copy(
            update={
                "alertmanager": AlertmanagerSettings(url=am.url, timeout=5),
                "playbooks": PlaybookSettings(paths=[str(book)]),
                "links": LinkSettings(allowed_urls=["https://runbooks.example.com"]),
            }
        )
        server: TestServer = await aiohttp_server(create_app(settings), port=port)
        client: TestClient = await aiohttp_client(server)
        store = server.app[keys.STORE]

        # Alertmanager delivers the group; the bot posts one message for it
        await am.post_alerts([*ERRORS, RELATED])
        incident = await errors_incident(
            store, lambda i: len(i.firing) == 2 and "slack" in i.data and "diagnostics" in i.data
        )
        await settle(client)
        incident = await store.get_incident(incident.id)
        assert incident.receiver == "bot"
        assert incident.group_key == '{}:{alertname="HighErrorRate", service="checkout"}'
        channel, ts = incident.data["slack"]["channel"], incident.data["slack"]["ts"]
        assert channel == CHANNEL
        assert top_level(fake_slack) == [ts]
        shown = message_text(fake_slack.messages[(CHANNEL, ts)])
        assert "P1 · TRIGGERED" in shown
        assert f"#{incident.id} HighErrorRate (service=checkout)" in shown
        assert "2 firing of 2" in shown
        assert f"<{RUNBOOK}|Runbook>" in shown
        # the diagnostic asked the real Alertmanager: the latency alert, not its own two
        [related] = incident.data["diagnostics"]
        assert (related["status"], related["value"], related["passed"]) == ("ok", 1, False)
        assert "CheckoutLatencyHigh" in related["lines"][0]
        assert ":x: *Other alerts for this service*: 1" in shown
        message = fake_slack.messages[(CHANNEL, ts)]
        assert action_ids(message)[:3] == ["ap_ack", "ap_resolve", "ap_escalate"]

        # thread events: diagnostics done and the suggested remediation
        thread = replies(fake_slack, ts)
        assert any("Diagnostics done: 1 failed (related)" in r for r in thread), thread
        assert any("silence_checkout" in r and "suggested" in r for r in thread), thread

        # a signed Acknowledge press, audited with the Slack user, shown in the message
        press = action_body("ap_ack", str(incident.id), fake_slack, rid="press", message_ts=ts)
        resp = await post_signed(client, press)
        assert resp.status == 200
        await settle(client)
        incident = await store.get_incident(incident.id)
        assert incident.status is Status.ACKNOWLEDGED
        assert incident.acknowledged_by == "@alice (U0ALICE)"
        assert texts(fake_slack, "press") == [f":eyes: You acknowledged #{incident.id}."]
        message = fake_slack.messages[(CHANNEL, ts)]
        shown = message_text(message)
        assert "P1 · ACKNOWLEDGED" in shown and "Acknowledged by @alice (U0ALICE)" in shown
        assert "ap_ack" not in action_ids(message)
        assert any(
            "acknowledged by @alice (U0ALICE) in Slack" in r for r in replies(fake_slack, ts)
        )

        # the alerts end in Alertmanager; its resolved webhook resolves the incident
        await am.resolve_alerts(ERRORS)
        incident = await errors_incident(store, lambda i: i.status is Status.RESOLVED)
        await settle(client)
        resolved = [e for e in incident.timeline if e.kind == EventKind.RESOLVED]
        assert [e.message for e in resolved] == ["all alerts resolved"]
        assert {a.status for a in incident.alerts} == {"resolved"}

        # the stored message shows it resolved: struck title, resolved line, no buttons
        message = fake_slack.messages[(CHANNEL, ts)]
        shown = message_text(message)
        assert "P1 · RESOLVED" in shown
        assert f"~#{incident.id} HighErrorRate (service=checkout)~" in shown
        assert ":white_check_mark: *Resolved*" in shown
        assert action_ids(message) == []
        # the thread tells the story in order
        story = ["Diagnostics done", "suggested", "acknowledged by", "all alerts resolved"]
        thread = replies(fake_slack, ts)
        at = [next(i for i, r in enumerate(thread) if step in r) for step in story]
        assert at == sorted(at), thread
        # never a second message for the incident: every change was an update in place
        assert top_level(fake_slack) == [ts]
        updates = [u for u in fake_slack.calls("chat.update") if u.params["ts"] == ts]
        assert len(updates) >= 2  # acknowledged, resolved (and diagnostics)
        # the other group (the latency alert) is still open: nothing leaked across
        others = [i for i in await store.list_incidents() if i.id != incident.id]
        assert [(i.title, i.status) for i in others] == [
            ("CheckoutLatencyHigh (service=checkout)", Status.TRIGGERED)
        ]
    assert time.monotonic() - started < 90  # seconds-long timers: never minutes of waiting
