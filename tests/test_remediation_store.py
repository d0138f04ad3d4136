"""The store primitives remediation stands on: atomic incident changes and rate windows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.alerts import parse_group
from bot.core.clock import ManualClock
from bot.core.incidents import Incident
from bot.errors import NotFound
from bot.settings import Severity
from bot.store.base import IncidentChange, NewEvent, NewJob, RateLimit, Subscriptions
from bot.store.sqlite import SqliteStore
from conftest import payload


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    clock = ManualClock()
    subscribers = Subscriptions()
    subscribers.add("notify.test")
    store = SqliteStore(str(tmp_path / "s.db"), subscribers=subscribers, clock=clock.now)
    await store.open()
    yield store
    await store.close()


async def opened(store: SqliteStore) -> int:
    body = json.dumps(payload("captured-firing"))
    inbox = await store.enqueue_payload("alertmanager", body)
    result = await store.apply_group(inbox, parse_group(body), Severity.P1, 1.0)
    assert result.incident_id is not None
    return result.incident_id


async def test_change_incident_writes_data_events_and_jobs_together(store: SqliteStore) -> None:
    incident_id = await opened(store)
    seen: list[Incident] = []

    def change(incident: Incident) -> IncidentChange:
        seen.append(incident)
        return IncidentChange(
            data={"remediations": {"a": 1}},
            events=[NewEvent("alertpilot", "remediation", "a: queued", {"step": "a"})],
            jobs=[
                NewJob("remediation.run", "run:a", 5.0, {"step": "a"}),
                NewJob("remediation.verify", "verify:a", 9.0, attach=False),
            ],
        )

    [event] = await store.change_incident(incident_id, change, now=2.0)
    assert seen[0].id == incident_id and seen[0].timeline == ()
    incident = await store.get_incident(incident_id)
    assert incident.data["remediations"] == {"a": 1}
    assert incident.timeline[-1] == event
    assert (event.kind, event.data) == ("remediation", {"step": "a"})
    by_key = {}
    kinds = ["remediation.run", "remediation.verify", "notify.test"]
    while jobs := await store.claim_jobs(10.0, 50, kinds):
        for job in jobs:
            by_key[job.key] = job
            await store.finish_job(job.id, 10.0)
    assert by_key["run:a"].incident_id == incident_id
    assert by_key["verify:a"].incident_id is None
    assert f"notify.test:event:{event.id}" in by_key  # subscribers see the event
    # the same job key again is a no-op
    await store.change_incident(
        incident_id,
        lambda i: IncidentChange(jobs=[NewJob("remediation.run", "run:a", 5.0)]),
        now=3.0,
    )
    assert await store.claim_jobs(10.0, 50, ["remediation.run"]) == []


async def test_a_change_that_raises_writes_nothing(store: SqliteStore) -> None:
    incident_id = await opened(store)
    before = await store.get_incident(incident_id)

    def change(incident: Incident) -> IncidentChange:
        raise ValueError("not now")

    with pytest.raises(ValueError, match="not now"):
        await store.change_incident(incident_id, change, now=2.0)
    after = await store.get_incident(incident_id)
    assert (after.data, after.timeline) == (before.data, before.timeline)
    with pytest.raises(NotFound):
        await store.change_incident(999, lambda i: IncidentChange(), now=2.0)


async def test_rate_slots(store: SqliteStore) -> None:
    runs = RateLimit("runs:step", limit=2, window=100.0)
    cool = RateLimit("cool:step:a", limit=1, window=10.0)
    assert await store.take_rate_slot([runs, cool], now=0.0) is None
    assert await store.take_rate_slot([runs, cool], now=5.0) == cool  # a full limit ...
    assert await store.rate_entries("runs:step", since=-1, now=5.0) == [0.0]  # ... takes nothing
    other = RateLimit("cool:step:b", limit=1, window=10.0)
    assert await store.take_rate_slot([runs, other], now=6.0) is None
    assert await store.take_rate_slot([runs, RateLimit("cool:step:c", 1, 10.0)], now=7.0) == runs
    assert await store.take_rate_slot([runs, cool], now=101.0) is None  # 0.0 left the window
    assert await store.rate_entries("runs:step", since=0.0, now=101.0) == [6.0, 101.0]
