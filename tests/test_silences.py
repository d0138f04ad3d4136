"""The silence service: records from every feature kept when they are written at once
(even from two processes), and one resolve subscriber that expires each silence marked
``expire_on_resolve`` exactly once, against a loopback Alertmanager."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot import keys
from bot.app import create_app
from bot.core.alerts import parse_group
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Status
from bot.errors import RetryLater
from bot.runtime.jobs import JobHandlers
from bot.settings import Severity
from bot.silences.service import KIND, NewSilence, SilenceService, added
from bot.slack.silence_menu import Silencer
from bot.store.base import Job
from bot.store.sqlite import SqliteStore
from bot.upstream.alertmanager import AlertmanagerClient
from conftest import make_settings, payload
from stack import LoopbackApp


class FakeAlertmanager(LoopbackApp):
    """Alertmanager's silence endpoints: creates answer a new id, deletes are counted; it
    knows no alerts, so a silence would match none outside the incident."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.down_for: set[str] = set()  # silence ids whose delete answers 503
        self.app.router.add_post("/api/v2/silences", self._create)
        self.app.router.add_delete("/api/v2/silence/{id}", self._delete)
        self.app.router.add_get("/api/v2/alerts", self._alerts)

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    async def _create(self, request: web.Request) -> web.Response:
        self.created.append(await request.json())
        silence_id = f"am-{len(self.created)}"
        await asyncio.sleep(0.001)  # let other writers run meanwhile
        return web.json_response({"silenceID": silence_id})

    async def _alerts(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _delete(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["id"]
        if silence_id in self.down_for:
            return web.json_response({"error": "unavailable"}, status=503)
        self.deleted.append(silence_id)
        return web.json_response({})


@pytest.fixture
async def alertmanager() -> AsyncIterator[FakeAlertmanager]:
    async with FakeAlertmanager() as am:
        yield am


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def open_store(tmp_path: Path, clock: ManualClock) -> SqliteStore:
    """A store whose resolves give the ``silences`` subscriber its job, as in the app."""
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=clock.now)
    handlers = JobHandlers()
    SilenceService(store, clock, lambda: None).register(handlers)
    store.subscribers = handlers.subscribers
    await store.open()
    return store


async def new_incident(store: SqliteStore, clock: ManualClock) -> int:
    body = json.dumps(payload("captured-firing"))
    inbox_id = await store.enqueue_payload("alertmanager", body)
    result = await store.apply_group(inbox_id, parse_group(body), Severity.P1, clock.now())
    assert result.incident_id is not None
    return result.incident_id


def job(incident_id: int, payload: dict[str, Any] | None = None) -> Job:
    return Job(1, KIND, f"{KIND}:test", incident_id, payload or {"kind": "incident.resolved"}, 1, 0)


async def test_silences_recorded_at_once_by_every_writer_are_all_kept(
    tmp_path: Path, alertmanager: FakeAlertmanager, session: aiohttp.ClientSession
) -> None:
    """The Slack button, an ack silence and a remediation step, the last one from a second
    process on the same file: nobody's record is lost."""
    clock = ManualClock()
    store = await open_store(tmp_path, clock)
    other = SqliteStore(str(tmp_path / "alertpilot.db"), clock=clock.now)  # another process
    await other.open()
    try:
        incident_id = await new_incident(store, clock)
        client = AlertmanagerClient(session, alertmanager.url, timeout=2, retries=0)
        service = SilenceService(store, clock, lambda: client)
        slack = Silencer(store, lambda: client, clock, service)

        async def from_pagerduty(n: int) -> None:
            await service.record(
                incident_id, NewSilence(id=f"pd-{n}", source="pagerduty", expire_on_resolve=True)
            )

        async def from_remediation(n: int) -> None:
            silence = NewSilence(id=f"rem-{n}", source="remediation", expire_on_resolve=True)
            await other.change_incident(
                incident_id, lambda i: added(i, silence, clock.now()), now=clock.now()
            )

        await asyncio.gather(
            *(slack.silence(incident_id, 3600, actor="@alice") for _ in range(8)),
            *(from_pagerduty(n) for n in range(8)),
            *(from_remediation(n) for n in range(8)),
        )
        incident = await store.get_incident(incident_id)
        ids = sorted(r["id"] for r in incident.data["silences"])
        assert ids == sorted(
            [f"am-{n}" for n in range(1, 25)]  # 8 presses, one silence per firing alert
            + [f"pd-{n}" for n in range(8)]
            + [f"rem-{n}" for n in range(8)]
        )
        notes = [e for e in incident.timeline if e.kind == EventKind.NOTE]
        assert len(notes) == 8  # one per Slack press, written with its records
        await service.record(  # a retried record adds nothing
            incident_id, NewSilence(id="pd-0", source="pagerduty", expire_on_resolve=True)
        )
        again = await store.get_incident(incident_id, timeline=False)
        assert len(again.data["silences"]) == 40
    finally:
        await other.close()
        await store.close()


async def test_resolve_expires_each_due_silence_exactly_once(
    tmp_path: Path, alertmanager: FakeAlertmanager, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    store = await open_store(tmp_path, clock)
    try:
        incident_id = await new_incident(store, clock)
        client = AlertmanagerClient(session, alertmanager.url, timeout=2, retries=0)
        service = SilenceService(store, clock, lambda: client)
        for silence in (
            NewSilence(id="slack-1", source="slack", expire_on_resolve=True, by="@alice"),
            NewSilence(id="slack-4h", source="slack", expire_on_resolve=False),
            NewSilence(id="pd-1", source="pagerduty", expire_on_resolve=True),
            NewSilence(id="rem-1", source="remediation", expire_on_resolve=True, step="quiet"),
        ):
            await service.record(incident_id, silence)
        ack = await store.transition(
            incident_id, Status.ACKNOWLEDGED, actor="ada", message="ack", now=clock.now()
        )
        assert ack.status is Status.ACKNOWLEDGED
        assert await store.claim_jobs(clock.now(), 10, [KIND]) == []  # resolves only
        await store.transition(
            incident_id, Status.RESOLVED, actor="ada", message="resolved", now=clock.now()
        )
        [resolved_job] = await store.claim_jobs(clock.now(), 10, [KIND])

        alertmanager.down_for = {"pd-1"}
        with pytest.raises(RetryLater, match="pd-1"):
            await service.on_resolved(resolved_job)
        assert alertmanager.deleted == ["slack-1"]
        marked = {
            r["id"]: r["expired_at"]
            for r in (await store.get_incident(incident_id)).data["silences"]
        }
        assert marked["slack-1"] is not None and marked["pd-1"] is None

        alertmanager.down_for = set()
        await service.on_resolved(resolved_job)  # the retry asks only what is left
        await service.on_resolved(job(incident_id))  # a second job changes nothing
        assert alertmanager.deleted == ["slack-1", "pd-1", "rem-1"]

        incident = await store.get_incident(incident_id)
        records = {r["id"]: r for r in incident.data["silences"]}
        assert records["slack-4h"]["expired_at"] is None
        assert all(records[i]["expired_at"] is not None for i in ("slack-1", "pd-1", "rem-1"))
        expired = [e for e in incident.timeline if e.data.get("state") == "silence_expired"]
        assert [(e.kind, e.data["silence_id"]) for e in expired] == [
            (EventKind.NOTE, "slack-1"),
            (EventKind.NOTE, "pd-1"),
            (EventKind.REMEDIATION, "rem-1"),
        ]
        assert (
            expired[1].message == "expired the acknowledgement silence pd-1: the incident resolved"
        )
        assert expired[2].data["step"] == "quiet"
    finally:
        await store.close()


async def test_a_silence_recorded_after_the_resolve_is_expired_too(
    tmp_path: Path, alertmanager: FakeAlertmanager, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    store = await open_store(tmp_path, clock)
    try:
        incident_id = await new_incident(store, clock)
        await store.transition(
            incident_id, Status.RESOLVED, actor="ada", message="resolved", now=clock.now()
        )
        [on_resolve] = await store.claim_jobs(clock.now(), 10, [KIND])
        client = AlertmanagerClient(session, alertmanager.url, timeout=2, retries=0)
        service = SilenceService(store, clock, lambda: client)
        await service.on_resolved(on_resolve)  # nothing recorded yet
        await store.finish_job(on_resolve.id, clock.now())
        late = NewSilence(id="late-1", source="remediation", expire_on_resolve=True, step="s")
        await service.record(incident_id, late)
        [expiry] = await store.claim_jobs(clock.now(), 10, [KIND])
        await service.on_resolved(expiry)
        assert alertmanager.deleted == ["late-1"]
    finally:
        await store.close()


async def test_no_alertmanager_client_yet_retries(tmp_path: Path) -> None:
    clock = ManualClock()
    store = await open_store(tmp_path, clock)
    try:
        incident_id = await new_incident(store, clock)
        service = SilenceService(store, clock, lambda: None)
        await service.record(
            incident_id, NewSilence(id="s-1", source="slack", expire_on_resolve=True)
        )
        with pytest.raises(RetryLater, match="no Alertmanager client"):
            await service.on_resolved(job(incident_id))
    finally:
        await store.close()


def test_the_app_has_one_resolve_subscriber_for_silences(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    handlers = app[keys.HANDLERS]
    assert KIND in handlers.subscribers.for_event(EventKind.RESOLVED)
    assert KIND not in handlers.subscribers.for_event(EventKind.ACKNOWLEDGED)
    assert "slack.unsilence" not in handlers.kinds
