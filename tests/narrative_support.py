"""Helpers for the narrative tests: incidents in a real store, a narrator or a whole app
pointed at the loopback OpenAI fake, and waiting for background jobs."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from bot import keys
from bot.app import create_app
from bot.core.alerts import parse_group
from bot.core.clock import Clock, ManualClock
from bot.core.incidents import Incident
from bot.narrative.llm import LlmClient
from bot.narrative.metrics import NarrativeMetrics
from bot.narrative.narrator import Narrator
from bot.settings import Settings, Severity
from bot.store.sqlite import SqliteStore
from conftest import make_settings, payload
from fakes import FakeOpenAI

T = TypeVar("T")


def llm_section(fake: FakeOpenAI | None, **overrides: Any) -> dict[str, Any]:
    if fake is None:
        return {"provider": "template", **overrides}
    return {
        "provider": "openai",
        "base_url": fake.api_base,
        "api_key": fake.api_key,
        "model": "gpt-4o-mini",
        "timeout": 2.0,
        "retry_backoff": 0.01,
        **overrides,
    }


def group(
    key: str = '{}:{alertname="HighErrorRate", service="checkout"}',
    *,
    annotations: dict[str, str] | None = None,
    alerts: int | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The captured firing payload, with its own groupKey and optional changes."""
    body = payload("captured-firing")
    body["groupKey"] = key
    if alerts is not None:
        template = body["alerts"][0]
        body["alerts"] = []
        for i in range(alerts):
            alert = copy.deepcopy(template)
            alert["labels"]["instance"] = f"pod-{i:03d}"
            alert["fingerprint"] = f"{i:016x}"
            body["alerts"].append(alert)
    for alert in body["alerts"]:
        alert["annotations"].update(annotations or {})
        alert["labels"].update(labels or {})
    body["commonAnnotations"].update(annotations or {})
    if labels:
        body["commonLabels"].update(labels)
        body["groupLabels"].update({k: v for k, v in labels.items() if k in body["groupLabels"]})
    return body


async def open_incident(store: SqliteStore, clock: ManualClock, body: dict[str, Any]) -> Incident:
    text = json.dumps(body)
    inbox = await store.enqueue_payload("alertmanager", text)
    result = await store.apply_group(inbox, parse_group(text), Severity.P1, clock.now())
    assert result.incident_id is not None
    return await store.get_incident(result.incident_id)


DIAGNOSTICS = [
    {
        "name": "error_share",
        "label": "5xx share of requests",
        "status": "ok",
        "value": 0.125,
        "unit": "ratio",
        "expect": "< 0.05",
        "passed": False,
        "text": "12.5% of checkout requests fail",
        "lines": ["pod-a: 12.5%", "pod-b: 9.1%"],
    },
    {
        "name": "db_up",
        "label": "database reachable",
        "status": "ok",
        "value": 1,
        "passed": True,
        "text": "the database answers",
    },
    {
        "name": "deploys",
        "label": "recent deploys",
        "status": "no_data",
        "passed": None,
        "text": "no deploy in the last hour",
    },
]


async def with_diagnostics(
    store: SqliteStore, clock: ManualClock, incident_id: int, results: list[dict[str, Any]]
) -> Incident:
    await store.update_incident(incident_id, now=clock.now(), data={"diagnostics": results})
    return await store.get_incident(incident_id)


@asynccontextmanager
async def narrator_for(
    tmp_path: Path,
    fake: FakeOpenAI | None,
    *,
    clock: ManualClock | None = None,
    server: dict[str, Any] | None = None,
    **llm: Any,
) -> AsyncIterator[tuple[Narrator, SqliteStore, ManualClock]]:
    """A Narrator on a fresh SQLite store, talking to ``fake`` (or templates only)."""
    clock = clock or ManualClock()
    settings = make_settings(tmp_path, llm=llm_section(fake, **llm), server=server or {})
    store = SqliteStore(settings.store.sqlite_path, clock=clock.now)
    await store.open()
    client = LlmClient(settings.llm) if fake is not None else None
    if client is not None:
        client.open()
    public = settings.server.public_url
    narrator = Narrator(
        settings.llm,
        store,
        clock,
        NarrativeMetrics(CollectorRegistry()),
        llm=client,
        allowed_url_prefixes=[public] if public else [],
    )
    try:
        yield narrator, store, clock
    finally:
        if client is not None:
            await client.close()
        await store.close()


def app_settings(tmp_path: Path, fake: FakeOpenAI | None, **sections: Any) -> Settings:
    llm = sections.pop("llm", {})
    return make_settings(tmp_path, llm=llm_section(fake, **llm), **sections)


@asynccontextmanager
async def running_app(settings: Settings, clock: Clock) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings, clock=clock))) as client:
        yield client


async def post_alerts(client: TestClient, body: dict[str, Any]) -> int:
    response = await client.post("/alertmanager", json=body)
    assert response.status == 200, await response.text()
    await client.app[keys.INBOX].drain()
    store = client.app[keys.STORE]
    incidents = await store.list_incidents(limit=1)
    return incidents[0].id


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy (background jobs run meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def until_quiet(client: TestClient, incident_id: int, *, steady: float = 0.3) -> Incident:
    """Wait until the incident's timeline has not changed for ``steady`` seconds."""
    store = client.app[keys.STORE]
    last, since = -1, time.monotonic()
    deadline = since + 10.0
    while time.monotonic() < deadline:
        incident = await store.get_incident(incident_id)
        if len(incident.timeline) != last:
            last, since = len(incident.timeline), time.monotonic()
        elif time.monotonic() - since >= steady:
            return incident
        await asyncio.sleep(0.05)
    raise AssertionError("the timeline kept changing")


def narrative_of(incident: Incident) -> dict[str, Any]:
    found = incident.data.get("narrative")
    return dict(found) if isinstance(found, dict) else {}


def metric(narrator: Narrator, name: str, labels: dict[str, str] | None = None) -> float:
    value = narrator.metrics.registry.get_sample_value(name, labels or {})
    return float(value or 0.0)
