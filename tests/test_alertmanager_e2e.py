"""A real Alertmanager delivers to the bot; incidents open and resolve from its webhooks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot import keys
from bot.app import create_app
from bot.core.incidents import Incident, Status
from bot.store.base import Store
from conftest import make_settings
from stack import Alertmanager

pytestmark = pytest.mark.integration

TOKEN = "am-to-bot-token-123"


async def wait_for_incidents(store: Store, predicate: Any, timeout: float = 20.0) -> list[Incident]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        incidents = [await store.get_incident(i.id) for i in await store.list_incidents(limit=100)]
        if predicate(incidents):
            return incidents
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; incidents: {[i.to_json() for i in incidents]}")
        await asyncio.sleep(0.1)


ALERTS = [
    {
        "labels": {"alertname": "HighErrorRate", "service": "checkout", "severity": "critical",
                   "instance": f"pod-{name}"},
        "annotations": {"summary": "Checkout error rate high", "runbook_url": "https://rb/x"},
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
    }
    for name in "abc"
]  # fmt: skip


async def test_real_alertmanager_opens_and_resolves_incidents(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    settings = make_settings(tmp_path, server={"webhook_token": TOKEN})
    server: TestServer = await aiohttp_server(create_app(settings))
    store = server.app[keys.STORE]
    webhook = str(server.make_url("/alertmanager"))
    auth = {"authorization": {"type": "Bearer", "credentials": TOKEN}}
    async with Alertmanager(tmp_path, webhook, http_config=auth) as am:
        await am.post_alerts(ALERTS)
        [incident] = await wait_for_incidents(
            store, lambda found: len(found) == 1 and len(found[0].alerts) == 3
        )
        assert incident.status is Status.TRIGGERED
        assert incident.severity.value == "P1"
        assert incident.receiver == "bot"
        assert incident.group_labels == {"alertname": "HighErrorRate", "service": "checkout"}
        assert {a.labels["instance"] for a in incident.alerts} == {"pod-a", "pod-b", "pod-c"}
        assert incident.timeline[0].kind == "incident.opened"  # first, whatever follows

        await am.resolve_alerts(ALERTS)
        [incident] = await wait_for_incidents(
            store, lambda found: found and found[0].status is Status.RESOLVED
        )
        assert {a.status for a in incident.alerts} == {"resolved"}
        assert "incident.resolved" in [event.kind for event in incident.timeline]
        assert incident.resolved_at is not None


async def test_wrong_token_is_refused_and_alertmanager_is_told(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    settings = make_settings(tmp_path, server={"webhook_token": TOKEN})
    server: TestServer = await aiohttp_server(create_app(settings))
    webhook = str(server.make_url("/alertmanager"))
    auth = {"authorization": {"type": "Bearer", "credentials": "not-the-token"}}
    async with Alertmanager(tmp_path, webhook, http_config=auth) as am:
        await am.post_alerts(ALERTS[:1])
        metrics = server.app[keys.METRICS]
        for _ in range(100):
            refused = metrics.webhooks.labels("alertmanager", "unauthorized")._value.get()
            if refused:
                break
            await asyncio.sleep(0.1)
        assert refused >= 1
        assert await server.app[keys.STORE].list_incidents() == []
