"""The store contract: the same assertions against SQLite and a real PostgreSQL.

Every test takes ``store`` (both backends) or ``pg_pair`` (two PostgreSQL stores on one
database, as two replicas have).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.alerts import parse_group
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Incident, Status, TransitionError
from bot.errors import NotFound
from bot.settings import Severity
from bot.store.base import (
    Decided,
    IncidentChange,
    NewEvent,
    NewJob,
    RateLimit,
    Store,
    Subscriptions,
)
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from conftest import payload

LEASE = 30.0


def subscribers() -> Subscriptions:
    subs = Subscriptions()
    subs.add("notify.test")
    subs.route("notify.test", "notify")
    subs.timer("timer.test")
    return subs


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Store]:
    made: Store
    if request.param == "sqlite":
        made = SqliteStore(str(tmp_path / "s.db"), subscribers=subscribers(), clock=clock.now)
    else:
        url = request.getfixturevalue("pg_url")
        made = PostgresStore(url, subscribers=subscribers(), clock=clock.now, lease=LEASE)
    await made.open()
    yield made
    await made.close()


@pytest.fixture
async def pg_pair(pg_url: str, clock: ManualClock) -> AsyncIterator[tuple[Store, Store]]:
    stores = [
        PostgresStore(pg_url, subscribers=subscribers(), clock=clock.now, lease=LEASE)
        for _ in range(2)
    ]
    await asyncio.gather(*(s.open() for s in stores))  # both migrate at once
    yield stores[0], stores[1]
    for s in stores:
        await s.close()


def body(name: str = "captured-firing", **changes: Any) -> str:
    data = payload(name) | changes
    return json.dumps(data)


async def deliver(store: Store, text: str, now: float = 1.0) -> int | None:
    inbox_id = await store.enqueue_payload("alertmanager", text)
    result = await store.apply_group(inbox_id, parse_group(text), Severity.P1, now)
    return result.incident_id


# inbox ------------------------------------------------------------------------------
async def test_a_payload_is_pending_until_applied_once(store: Store) -> None:
    text = body()
    first = await store.enqueue_payload("alertmanager", text)
    second = await store.enqueue_payload("alertmanager", text)
    repeat = await store.enqueue_payload("alertmanager", text, result="duplicate")
    assert first < second < repeat
    pending = await store.pending_payloads(10)
    assert [p.id for p in pending] == [first, second]
    assert pending[0].body == text and pending[0].source == "alertmanager"
    assert (await store.pending_payloads(10, bodies_except={first}))[0].body == ""

    [applied, again] = await store.apply_groups(
        [(first, parse_group(text), Severity.P1), (second, parse_group(text), Severity.P1)], 1.0
    )
    assert applied.created and applied.incident_id is not None and applied.events
    assert again.duplicate and again.incident_id is None
    assert await store.pending_payloads(10) == []
    assert (await store.stats()).inbox_depth == 0


async def test_payloads_committed_together_keep_their_own_ids(store: Store) -> None:
    bodies = [body(groupKey=f"group-{n}") for n in range(60)]
    ids = await asyncio.gather(*(store.enqueue_payload("alertmanager", b) for b in bodies))
    assert len(set(ids)) == len(bodies)
    pending = {item.id: item.body for item in await store.pending_payloads(100)}
    assert [pending[i] for i in ids] == bodies


async def test_skip_and_reject_leave_nothing_pending(store: Store) -> None:
    a = await store.enqueue_payload("alertmanager", body())
    b = await store.enqueue_payload("alertmanager", body())
    await store.skip_payloads([a], "duplicate", 1.0)
    await store.reject_payload(b, "bad", 1.0)
    assert await store.pending_payloads(10) == []
    assert await store.list_incidents() == []


async def test_firing_then_resolved_then_firing_again(store: Store) -> None:
    first = await deliver(store, body())
    assert first is not None
    incident = await store.get_incident(first)
    assert incident.status is Status.TRIGGERED and len(incident.alerts) == 3
    assert incident.key.startswith("alertpilot-") and incident.timeline[0].kind == EventKind.OPENED
    assert await store.find_incident(incident.key) == incident

    assert await deliver(store, body("captured-resolved"), 2.0) == first
    resolved = await store.get_incident(first)
    assert resolved.status is Status.RESOLVED and resolved.resolved_at == 2.0
    assert resolved.timeline[-1].kind == EventKind.RESOLVED

    again = body(
        alerts=[
            dict(a, startsAt="2030-01-01T00:00:00Z") for a in payload("captured-firing")["alerts"]
        ]
    )
    second = await deliver(store, again, 3.0)
    assert second is not None and second != first
    assert (await store.get_incident(second)).previous_id == first
    assert (await store.get_incident(first)).timeline[-1].kind == EventKind.REOPENED
    assert [i.id for i in await store.list_incidents()] == [second, first]
    assert [i.id for i in await store.list_incidents(status=Status.RESOLVED)] == [first]
    assert [i.id for i in await store.list_incidents(before=second)] == [first]
    briefs = await store.incident_briefs([second, 999, first])
    assert [b.id for b in briefs] == [second, first]


async def test_truncated_deliveries_are_noted(store: Store) -> None:
    incident_id = await deliver(store, body(truncatedAlerts=4))
    assert incident_id is not None
    incident = await store.get_incident(incident_id)
    assert incident.data["truncated"]["alerts"] == 4
    assert incident.timeline[-1].kind == EventKind.NOTE


async def test_a_nul_in_labels_is_stored(store: Store) -> None:
    data = payload("captured-firing")
    data["commonLabels"]["service"] = "check\u0000out"
    for alert in data["alerts"]:
        alert["labels"]["note"] = "a\u0000b"
    incident_id = await deliver(store, json.dumps(data))
    assert incident_id is not None
    incident = await store.get_incident(incident_id)
    assert incident.alerts[0].labels["note"] == "a\u0000b"  # inside JSON: kept
    await store.update_incident(incident_id, now=2.0, data={"seen": "a\u0000b"})
    for alert in data["alerts"]:
        alert["startsAt"] = "2030-01-01T00:00:00Z"  # new states of the same alerts
    assert await deliver(store, json.dumps(data | {"truncatedAlerts": 2}), 3.0) == incident_id
    changed = await store.get_incident(incident_id)
    assert changed.data["seen"] == "a\u0000b" and changed.data["truncated"]["alerts"] == 2
    await store.kv_set("k", "x\u0000y", now=1.0)
    assert (await store.kv_get("k", 1.0) or "").startswith("x")


# incidents --------------------------------------------------------------------------
async def test_transition_records_the_event_and_its_jobs(store: Store) -> None:
    incident_id = await deliver(store, body())
    assert incident_id is not None
    acked = await store.transition(
        incident_id, Status.ACKNOWLEDGED, actor="ann", message="mine", now=5.0
    )
    assert acked.status is Status.ACKNOWLEDGED and acked.acknowledged_by == "ann"
    assert acked.timeline[-1].kind == EventKind.ACKNOWLEDGED
    with pytest.raises(TransitionError):
        await store.transition(incident_id, Status.ACKNOWLEDGED, actor="b", message="", now=6.0)
    with pytest.raises(NotFound):
        await store.transition(999, Status.RESOLVED, actor="b", message="", now=6.0)
    back = await store.transition(incident_id, Status.TRIGGERED, actor="b", message="", now=7.0)
    assert back.acknowledged_by is None and back.acknowledged_at is None
    jobs = await store.claim_jobs(10.0, 50, ["notify.test"])
    # One at a time per incident and kind, in order: the opened event's job first.
    assert [j.payload["kind"] for j in jobs] == [EventKind.OPENED]


async def test_update_incident_merges_data(store: Store) -> None:
    incident_id = await deliver(store, body())
    assert incident_id is not None
    await store.update_incident(incident_id, now=2.0, data={"a": 1})
    updated = await store.update_incident(
        incident_id, now=3.0, severity=Severity.P0, playbook="pb", data={"b": 2}
    )
    assert updated.data == {"a": 1, "b": 2}
    assert (updated.severity, updated.playbook, updated.updated_at) == (Severity.P0, "pb", 3.0)
    with pytest.raises(NotFound):
        await store.update_incident(999, now=1.0)


async def test_append_event_and_read_after(store: Store) -> None:
    incident_id = await deliver(store, body())
    assert incident_id is not None
    event = await store.append_event(
        incident_id, actor="x", kind="note", message="hi", now=2.0, data={"k": "v"}, notify=False
    )
    assert await store.events(incident_id, after=event.id - 1) == [event]
    assert event.data == {"k": "v"}


async def test_change_incident_writes_everything_or_nothing(store: Store) -> None:
    incident_id = await deliver(store, body())
    assert incident_id is not None
    seen: list[Incident] = []

    def change(incident: Incident) -> IncidentChange:
        seen.append(incident)
        return IncidentChange(
            data={"steps": {"a": 1}},
            events=[NewEvent("alertpilot", "remediation", "queued", {"step": "a"})],
            jobs=[
                NewJob("run.test", "run:a", 5.0, {"step": "a"}),
                NewJob("timer.test", "timer:a", 1e10, attach=False),
            ],
            severity=Severity.P0,
            playbook="pb",
        )

    [event] = await store.change_incident(incident_id, change, now=2.0)
    assert seen[0].timeline == ()
    incident = await store.get_incident(incident_id)
    assert incident.data["steps"] == {"a": 1} and incident.severity is Severity.P0
    assert incident.timeline[-1] == event
    [run] = await store.claim_jobs(10.0, 10, ["run.test"])
    assert run.incident_id == incident_id and run.payload == {"step": "a"}
    assert (await store.stats()).jobs_scheduled == 1

    def boom(incident: Incident) -> IncidentChange:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await store.change_incident(incident_id, boom, now=3.0)
    with pytest.raises(NotFound):
        await store.change_incident(999, change, now=3.0)

    def cancel(incident: Incident) -> Decided[str]:
        return Decided(IncidentChange(cancel=["timer:"]), "cancelled")

    assert await store.decide(incident_id, cancel, now=4.0) == "cancelled"
    assert await store.claim_jobs(2e10, 10, ["timer.test"]) == []


# jobs -------------------------------------------------------------------------------
async def test_job_lifecycle(store: Store) -> None:
    assert await store.enqueue_job("k", "a", due_at=1.0, payload={"n": 1})
    assert not await store.enqueue_job("k", "a", due_at=1.0)
    assert await store.enqueue_job("k", "b", due_at=50.0)
    assert await store.next_job_due(["k"]) == 1.0
    [job] = await store.claim_jobs(2.0, 10, ["k"])
    assert (job.key, job.attempts, job.payload) == ("a", 1, {"n": 1})
    assert await store.claim_jobs(2.0, 10, ["k"]) == []
    await store.retry_job(job.id, 3.0, "boom", 2.0)
    [again] = await store.claim_jobs(3.0, 10, ["k"])
    assert again.attempts == 2
    await store.defer_job(again.id, 4.0, "later", 3.0)
    [deferred] = await store.claim_jobs(4.0, 10, ["k"])
    assert deferred.attempts == 2  # a deferral is no attempt
    await store.fail_job(deferred.id, "gave up", 4.0)
    assert (await store.stats()).jobs_failed == 1
    [b] = await store.claim_jobs(60.0, 10, ["k"])
    await store.finish_job(b.id, 60.0)
    assert await store.claim_jobs(100.0, 10, ["k"]) == []
    assert (await store.stats()).jobs_pending == 0


async def test_jobs_of_one_incident_and_kind_run_in_order(store: Store) -> None:
    incident_id = await deliver(store, body())
    assert incident_id is not None
    await store.claim_jobs(10.0, 50, ["notify.test"])  # the opened event's job
    for n in range(3):
        await store.enqueue_job("k", f"j{n}", due_at=1.0, incident_id=incident_id)
    await store.enqueue_job("k", "free", due_at=1.0)
    claimed = await store.claim_jobs(2.0, 10, ["k"])
    assert sorted(j.key for j in claimed) == ["free", "j0"]
    await store.finish_job(next(j.id for j in claimed if j.key == "j0"), 2.0)
    assert [j.key for j in await store.claim_jobs(2.0, 10, ["k"])] == ["j1"]


async def test_lanes_and_routing(store: Store) -> None:
    incident_id = await deliver(store, body())
    assert incident_id is not None
    assert await store.claim_jobs(10.0, 10, ["notify.test"], lane="pipeline") == []
    assert len(await store.claim_jobs(10.0, 10, ["notify.test"], lane="notify")) == 1
    await store.enqueue_job("moved", "m", due_at=1.0)
    store.subscribers.route("moved", "narrative")
    assert await store.route_jobs() == 1
    assert [j.key for j in await store.claim_jobs(2.0, 10, ["moved"], lane="narrative")] == ["m"]


async def test_a_running_job_is_taken_over_once_its_lease_ran_out(
    store: Store, clock: ManualClock
) -> None:
    await store.enqueue_job("k", "a", due_at=0.0)
    [job] = await store.claim_jobs(clock.now(), 10, ["k"])
    clock.advance(LEASE + 1)
    await store.release_running_jobs()
    [again] = await store.claim_jobs(clock.now(), 10, ["k"])
    assert again.id == job.id and again.attempts == 2


# shared state ------------------------------------------------------------------------
async def test_key_value_and_seen_events(store: Store) -> None:
    await store.kv_set("a", "1", now=1.0)
    await store.kv_set("b", "2", now=1.0, ttl=10.0)
    assert await store.kv_get("a", 100.0) == "1"
    assert await store.kv_get("b", 5.0) == "2"
    assert await store.kv_get("b", 12.0) is None
    await store.kv_set("a", "3", now=2.0)
    assert await store.kv_get("a", 2.0) == "3"

    assert await store.seen_event("pd", "e1") is None
    await store.remember_event("pd", "e1", "acked", at=1.0)
    await store.remember_event("pd", "e1", "other", at=2.0)
    assert await store.seen_event("pd", "e1") == "acked"
    await store.remember_event("pd", "e2", "x", at=5.0)
    assert await store.forget_events("pd", before=3.0) == 1
    assert await store.seen_event("pd", "e2") == "x"


async def test_rate_slots(store: Store) -> None:
    per_channel = RateLimit("slack:C1", 2, 60.0)
    overall = RateLimit("slack", 3, 60.0)
    assert await store.take_rate_slot([per_channel, overall], now=1.0) is None
    assert await store.take_rate_slot([per_channel, overall], now=2.0) is None
    assert await store.take_rate_slot([per_channel, overall], now=3.0) == per_channel
    assert await store.take_rate_slot([overall], now=3.0) is None
    assert await store.take_rate_slot([overall], now=4.0) == overall
    assert await store.rate_entries("slack:C1", since=0.0, now=5.0) == [1.0, 2.0]
    assert await store.take_rate_slot([per_channel], now=70.0) is None


async def test_stats_and_prune(store: Store, clock: ManualClock) -> None:
    await store.enqueue_payload("alertmanager", body())
    stats = await store.stats()
    assert stats.inbox_depth == 1 and stats.oldest_pending_at == clock.now()
    [item] = await store.pending_payloads(10)
    await store.apply_group(item.id, parse_group(item.body), Severity.P1, clock.now())
    stats = await store.stats()
    assert stats.open_by_severity == {"P1": 1} and stats.jobs_pending == 1
    [job] = await store.claim_jobs(clock.now(), 10, ["notify.test"])
    await store.finish_job(job.id, clock.now())
    await store.kv_set("gone", "x", now=clock.now(), ttl=1.0)
    await store.enqueue_payload("alertmanager", body())  # newer than the cut: kept
    assert await store.prune(clock.now() + 10) >= 2
    assert await store.kv_get("gone", clock.now()) is None
    assert len(await store.pending_payloads(10)) == 1
    await store.ping()


# two replicas on one PostgreSQL ------------------------------------------------------
async def test_two_replicas_apply_each_delivery_once(pg_pair: tuple[Store, Store]) -> None:
    a, b = pg_pair
    text = body()
    ids = [await s.enqueue_payload("alertmanager", text) for s in (a, b, a, b)]
    items = [(i, parse_group(text), Severity.P1) for i in ids]
    results = await asyncio.gather(a.apply_groups(items, 1.0), b.apply_groups(items, 1.0))
    created = [r for batch in results for r in batch if r.created]
    assert len(created) == 1
    assert len(await a.list_incidents()) == 1
    assert await b.pending_payloads(10) == []


async def test_two_replicas_claim_different_jobs(pg_pair: tuple[Store, Store]) -> None:
    a, b = pg_pair
    for n in range(40):
        await a.enqueue_job("k", f"j{n}", due_at=0.0)
    claims = await asyncio.gather(*(s.claim_jobs(1.0, 7, ["k"]) for s in (a, b, a, b, a, b)))
    keys = [job.key for jobs in claims for job in jobs]
    assert len(keys) == len(set(keys)) == 40


async def test_a_live_lease_is_not_released_at_another_replicas_start(
    pg_pair: tuple[Store, Store], clock: ManualClock
) -> None:
    a, b = pg_pair
    await a.enqueue_job("k", "a", due_at=0.0)
    [job] = await a.claim_jobs(clock.now(), 10, ["k"])
    assert await b.release_running_jobs() == 0
    assert await b.claim_jobs(clock.now() + LEASE / 2, 10, ["k"]) == []
    assert await b.next_job_due(["k"]) == clock.now() + LEASE
    [taken] = await b.claim_jobs(clock.now() + LEASE + 1, 10, ["k"])
    assert taken.id == job.id


async def test_rate_windows_are_shared(pg_pair: tuple[Store, Store]) -> None:
    a, b = pg_pair
    limit = RateLimit("pagerduty:key", 5, 60.0)
    taken = await asyncio.gather(*(s.take_rate_slot([limit], now=1.0) for s in (a, b) * 5))
    assert taken.count(None) == 5


async def test_ordering_holds_across_replicas(pg_pair: tuple[Store, Store]) -> None:
    a, b = pg_pair
    incident_id = await deliver(a, body())
    assert incident_id is not None

    async def add(store: Store, n: int) -> None:
        await store.append_event(incident_id, actor="x", kind="note", message=str(n), now=2.0)

    await asyncio.gather(*(add(s, n) for n, s in enumerate((a, b) * 5)))
    order: list[int] = []
    while True:
        claimed = await asyncio.gather(*(s.claim_jobs(10.0, 5, ["notify.test"]) for s in (a, b)))
        jobs = [job for batch in claimed for job in batch]
        if not jobs:
            break
        assert len(jobs) == 1  # one of the incident's notify jobs at a time
        order.append(jobs[0].payload["event_id"])
        await a.finish_job(jobs[0].id, 10.0)
    assert order == sorted(order) and len(order) == 11


async def test_hold_is_a_lock_across_replicas(pg_pair: tuple[Store, Store]) -> None:
    a, b = pg_pair
    order: list[str] = []

    async def hold(store: Store, name: str, pause: float) -> None:
        async with store.hold("pipeline:1"):
            order.append(f"{name} in")
            await asyncio.sleep(pause)
            order.append(f"{name} out")

    first = asyncio.create_task(hold(a, "a", 0.3))
    await asyncio.sleep(0.1)
    await hold(b, "b", 0)
    await first
    assert order == ["a in", "a out", "b in", "b out"]
    async with b.hold("pipeline:2"), a.hold("pipeline:3"):  # other names do not wait
        pass


async def test_a_hold_given_up_or_cancelled_leaves_no_lock_behind(
    pg_pair: tuple[Store, Store],
) -> None:
    """The lock goes with the block: after it ends (by leaving it, by an error in it, or
    cancelled while it waited for the lock) the other replica takes the same name at
    once, however many times the same pooled connections are used again."""
    a, b = pg_pair

    async def taken_at_once(store: Store) -> None:
        async with asyncio.timeout(2):
            async with store.hold("pipeline:9"):
                pass

    for _ in range(3):
        async with a.hold("pipeline:9"):
            pass
        await taken_at_once(b)
        with pytest.raises(RuntimeError):
            async with a.hold("pipeline:9"):
                raise RuntimeError("in the block")
        await taken_at_once(b)
    async with b.hold("pipeline:9"):
        waiting = asyncio.create_task(taken_at_once(a))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    for store in (a, b, a):
        await taken_at_once(store)


async def test_hold_on_either_store(store: Store) -> None:
    async with store.hold("x"):
        await store.kv_set("in", "1", now=1.0)
    assert await store.kv_get("in", 1.0) == "1"


async def test_a_lease_is_renewed_while_its_job_runs(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, clock=time.time, lease=0.6) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        runner, other = stores
        await runner.enqueue_job("k", "long", due_at=0.0)
        [job] = await runner.claim_jobs(time.time(), 10, ["k"])
        await asyncio.sleep(1.5)  # more than two leases: renewed every 0.2 s
        assert await other.claim_jobs(time.time(), 10, ["k"]) == []
        await runner.finish_job(job.id, time.time())
        await runner.enqueue_job("k", "dropped", due_at=0.0)
        [held] = await runner.claim_jobs(time.time(), 10, ["k"])
        await runner.close()  # dies holding it: nothing renews its lease
        await asyncio.sleep(0.8)
        [taken] = await other.claim_jobs(time.time(), 10, ["k"])
        assert taken.id == held.id
    finally:
        for s in stores:
            await s.close()
