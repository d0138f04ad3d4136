"""One alert must not freeze the server: a megabyte label value (one that the old e-mail
pattern took quadratic time on) is acknowledged at once, /healthz keeps answering, and
the narrative built from it, template and LLM prompt alike, is bounded."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bot import keys
from bot.core.clock import SystemClock
from bot.core.incidents import Incident
from bot.narrative.redact import Redactor
from conftest import API, JSON, payload
from fakes import FakeOpenAI
from narrative_support import app_settings, eventually, narrative_of, running_app

HUGE = "x@" + "a" * 1_000_000  # an "@" and a megabyte of what could be an address
BUDGET = 0.5  # s: generous for a shared machine; before the fix it was 20 s and more


def hostile_group() -> dict[str, Any]:
    body = copy.deepcopy(payload("captured-firing"))
    for labels in [body["commonLabels"], *(a["labels"] for a in body["alerts"])]:
        labels["note"] = HUGE
    body["commonAnnotations"]["description"] = HUGE
    return body


def test_redaction_is_bounded_on_a_long_value() -> None:
    started = time.perf_counter()
    out = Redactor().text(HUGE)
    assert time.perf_counter() - started < BUDGET
    assert len(out) <= 8200


class HealthProbe:
    """``GET /healthz`` every 10 ms while the test runs; the slowest answer."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.slowest = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            resp = await self.client.get("/healthz")
            assert resp.status == 200
            self.slowest = max(self.slowest, time.perf_counter() - started)
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> HealthProbe:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def narrated(client: TestClient) -> Incident | None:
    store = client.app[keys.STORE]
    incidents = await store.list_incidents(limit=1)
    if not incidents:
        return None
    incident = await store.get_incident(incidents[0].id)
    return incident if narrative_of(incident).get("source") == "llm" else None


async def test_a_megabyte_label_freezes_nothing(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = "HighErrorRate is firing on checkout."
    settings = app_settings(tmp_path, fake_openai, llm={"settle": 0.05, "llm_fallback_delay": 0.1})
    async with running_app(settings, SystemClock()) as client, HealthProbe(client) as health:
        started = time.perf_counter()
        body = io.BytesIO(json.dumps(hostile_group()).encode())
        resp = await client.post(
            "/alertmanager", data=body, headers={"Content-Type": "application/json"}
        )
        ack = time.perf_counter() - started
        assert resp.status == 200, await resp.text()
        incident = await eventually(lambda: narrated(client), what="the LLM narrative")
    assert ack < BUDGET, f"ack took {ack:.3f}s"
    assert health.slowest < BUDGET, f"/healthz took {health.slowest:.3f}s"
    sent = fake_openai.completions[0]["messages"][1]["content"]
    assert len(sent) < 40_000  # the prompt holds a clipped value, not the megabyte
    assert narrative_of(incident)["text"] == "HighErrorRate is firing on checkout."


async def test_explaining_it_through_the_api_freezes_nothing(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """``POST /api/v1/narratives`` for the incident: built afresh for each audience (no
    cached answer to return), the prompt off the loop, while ``/healthz`` keeps answering."""
    fake_openai.reply = "HighErrorRate is firing on checkout."
    settings = app_settings(tmp_path, fake_openai, llm={"settle": 0.05, "llm_fallback_delay": 0.1})
    async with running_app(settings, SystemClock()) as client:
        body = io.BytesIO(json.dumps(hostile_group()).encode())
        resp = await client.post("/alertmanager", data=body, headers=JSON)
        assert resp.status == 200, await resp.text()
        incident = await eventually(lambda: narrated(client), what="the LLM narrative")
        asked = len(fake_openai.completions)
        async with HealthProbe(client) as health:
            slowest = 0.0
            for audience in ("stakeholder", "engineer"):
                started = time.perf_counter()
                resp = await client.post(
                    "/api/v1/narratives",
                    json={"incidentId": incident.id, "audience": audience},
                    headers={**API, **JSON},
                )
                slowest = max(slowest, time.perf_counter() - started)
                answer = await resp.json()
                assert resp.status == 200, answer
    assert slowest < BUDGET, f"the API took {slowest:.3f}s"
    assert health.slowest < BUDGET, f"/healthz took {health.slowest:.3f}s"
    assert len(fake_openai.completions) > asked  # the model was asked: the prompt was built
    assert all(len(c["messages"][1]["content"]) < 40_000 for c in fake_openai.completions)
