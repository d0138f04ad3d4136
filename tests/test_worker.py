"""The job runner: subscribers see every event once, in order; retries, failures, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from bot.core.alerts import parse_group
from bot.core.clock import ManualClock
from bot.core.incidents import Status, TransitionError
from bot.core.transitions import IncidentActions
from bot.errors import PermanentFailure, RetryLater
from bot.runtime.jobs import JobHandlers
from bot.runtime.metrics import Metrics
from bot.runtime.worker import JobRunner
from bot.settings import Severity
from bot.store import sqlite as sqlite_store
from bot.store.base import Job, Subscriptions
from bot.store.migrations import MIGRATIONS
from bot.store.sqlite import SqliteStore
from conftest import make_settings, payload


async def open_store(tmp_path: Path, clock: ManualClock, subscribers: Subscriptions) -> SqliteStore:
    store = SqliteStore(str(tmp_path / "s.db"), subscribers=subscribers, clock=clock.now)
    await store.open()
    return store


async def incident(store: SqliteStore, clock: ManualClock) -> int:
    group = parse_group(json.dumps(payload("captured-firing")))
    inbox = await store.enqueue_payload("alertmanager", json.dumps(payload("captured-firing")))
    result = await store.apply_group(inbox, group, Severity.P1, clock.now())
    assert result.incident_id is not None
    return result.incident_id


def runner(store: SqliteStore, handlers: JobHandlers, clock: ManualClock) -> JobRunner:
    settings = make_settings(Path("/tmp"), workers={"max_attempts": 3, "backoff_base": 10})
    return JobRunner(store, store.job_signal, handlers, settings.workers, Metrics(), clock)


async def test_subscriber_sees_each_event_once_in_order(tmp_path: Path) -> None:
    clock = ManualClock()
    seen: list[str] = []
    handlers = JobHandlers()

    async def record(job: Job) -> None:
        seen.append(str(job.payload["kind"]))

    handlers.register("notify.test", record, subscribe=True)
    store = await open_store(tmp_path, clock, handlers.subscribers)
    try:
        incident_id = await incident(store, clock)
        actions = IncidentActions(store, clock)
        await actions.acknowledge(incident_id, actor="ana", source="slack")
        await actions.acknowledge(incident_id, actor="ana", source="slack")  # no-op
        await actions.resolve(incident_id, actor="bo", source="api")
        work = runner(store, handlers, clock)
        assert await work.run_due() == 3
        assert await work.run_due() == 0
        assert seen == ["incident.opened", "incident.acknowledged", "incident.resolved"]
        found = await store.get_incident(incident_id)
        assert found.status is Status.RESOLVED
        assert found.acknowledged_by == "ana"
        assert [e.message for e in found.timeline][1:] == [
            "acknowledged by ana in Slack",
            "resolved by bo in the API",
        ]
        with pytest.raises(TransitionError):
            await store.transition(incident_id, Status.ACKNOWLEDGED, actor="x", message="", now=1)
    finally:
        await store.close()


async def test_retry_later_keeps_order_and_gives_up_after_max_attempts(tmp_path: Path) -> None:
    clock = ManualClock()
    calls: list[tuple[str, int]] = []
    handlers = JobHandlers()

    async def flaky(job: Job) -> None:
        calls.append((str(job.payload["kind"]), job.attempts))
        if job.payload["kind"] == "incident.opened":
            raise RetryLater("Slack is down", delay=30)

    handlers.register("notify.flaky", flaky, subscribe=True)
    store = await open_store(tmp_path, clock, handlers.subscribers)
    try:
        incident_id = await incident(store, clock)
        await IncidentActions(store, clock).acknowledge(incident_id, actor="a", source="cli")
        work = runner(store, handlers, clock)
        await work.run_due()
        # the ack waits behind the post it would update
        assert calls == [("incident.opened", 1)]
        clock.advance(31)
        await work.run_due()
        clock.advance(31)
        await work.run_due()
        assert calls[-1] == ("incident.acknowledged", 1)  # after the post gave up
        assert [c for c in calls if c[0] == "incident.opened"] == [
            ("incident.opened", 1), ("incident.opened", 2), ("incident.opened", 3)
        ]  # fmt: skip
        stats = await store.stats()
        assert stats.jobs_failed == 1
        timeline = (await store.get_incident(incident_id)).timeline
        assert timeline[-1].kind == "job.failed"
        assert "gave up after 3 attempts: Slack is down" in timeline[-1].message
    finally:
        await store.close()


async def test_permanent_failure_and_crashing_handler(tmp_path: Path) -> None:
    clock = ManualClock()
    handlers = JobHandlers()

    async def refuse(job: Job) -> None:
        raise PermanentFailure("HTTP 400: invalid event")

    async def crash(job: Job) -> None:
        raise ZeroDivisionError("bug")

    handlers.register("a", refuse, subscribe=True)
    handlers.register("b", crash, subscribe=True)
    store = await open_store(tmp_path, clock, handlers.subscribers)
    try:
        incident_id = await incident(store, clock)
        work = runner(store, handlers, clock)
        await work.run_due()
        messages = [e.message for e in (await store.get_incident(incident_id)).timeline]
        assert "a failed: HTTP 400: invalid event" in messages
        assert (await store.stats()).jobs_pending == 1  # the crash is retried with backoff
    finally:
        await store.close()


async def test_running_jobs_resume_after_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    handlers = JobHandlers()
    started = asyncio.Event()
    done: list[int] = []

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    handlers.register("slow", slow, subscribe=True)
    store = await open_store(tmp_path, clock, handlers.subscribers)
    incident_id = await incident(store, clock)
    work = runner(store, handlers, clock)
    task = asyncio.create_task(work.run_due())
    await started.wait()
    task.cancel()  # the process "dies" mid-job
    await asyncio.gather(task, return_exceptions=True)
    await store.close()

    handlers2 = JobHandlers()

    async def quick(job: Job) -> None:
        done.append(job.id)

    handlers2.register("slow", quick, subscribe=True)
    store2 = await open_store(tmp_path, clock, handlers2.subscribers)
    try:
        await store2.release_running_jobs()
        assert await runner(store2, handlers2, clock).run_due() == 1
        assert len(done) == 1
        assert (await store2.get_incident(incident_id)).id == incident_id
    finally:
        await store2.close()


async def test_run_due_waits_for_a_job_the_background_loop_already_claimed(
    tmp_path: Path,
) -> None:
    """The background loop and ``run_due`` share the queue: a job the loop claimed first is
    finished, not still half-way, when ``run_due`` returns (tests read its outcome next)."""
    clock = ManualClock()
    handlers = JobHandlers()
    claimed = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    async def slow(job: Job) -> None:
        claimed.set()
        await release.wait()
        finished.append(job.id)

    handlers.register("slow", slow, subscribe=True)
    store = await open_store(tmp_path, clock, handlers.subscribers)
    work = runner(store, handlers, clock)
    try:
        await incident(store, clock)
        work.start()
        await asyncio.wait_for(claimed.wait(), 5)  # the loop has it
        running = asyncio.create_task(work.run_due())
        await asyncio.sleep(0.05)
        assert not running.done()  # waiting for the loop's job, not returning at once
        release.set()
        await asyncio.wait_for(running, 5)
        assert len(finished) == 1
        assert (await store.stats()).jobs_pending == 0
    finally:
        await work.stop()
        await store.close()


async def test_enqueue_job_is_idempotent_by_key(tmp_path: Path) -> None:
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        assert await store.enqueue_job("timer", "escalate:1", due_at=clock.now() + 300)
        assert not await store.enqueue_job("timer", "escalate:1", due_at=clock.now() + 300)
        assert await store.claim_jobs(clock.now(), 10, ["timer"]) == []
        clock.advance(301)
        [job] = await store.claim_jobs(clock.now(), 10, ["timer"])
        assert job.key == "escalate:1"
    finally:
        await store.close()


class PoisonStore(SqliteStore):
    """A real store whose apply fails for one payload, as a bug would."""

    async def apply_groups(self, items, now):  # type: ignore[no-untyped-def]
        if any("poison" in group.groupKey for _, group, _ in items):
            raise ValueError("bug triggered by this payload")
        return await super().apply_groups(items, now)


async def test_one_bad_payload_does_not_block_the_batch(tmp_path: Path) -> None:
    from bot.core.clock import SystemClock
    from bot.runtime.worker import InboxProcessor
    from bot.settings import IncidentSettings

    store = PoisonStore(str(tmp_path / "p.db"), clock=SystemClock().now)
    await store.open()
    try:
        for key in ("a", "poison", "b"):
            body = payload("captured-firing")
            body["groupKey"] = key
            await store.enqueue_payload("alertmanager", json.dumps(body))
        inbox = InboxProcessor(
            store, store.inbox_signal, IncidentSettings(), Metrics(), SystemClock(), 1.0
        )
        assert await inbox.drain() == 3
        assert await store.pending_payloads(10) == []
        assert [i.group_key for i in await store.list_incidents()] == ["b", "a"]
        row = await store._run(
            lambda c: c.execute("SELECT result FROM inbox_done WHERE id = 2").fetchone()[0]
        )
        assert row.startswith("rejected: ValueError: bug triggered")
    finally:
        await store.close()


async def test_scheduled_waits_use_up_no_attempts(tmp_path: Path) -> None:
    """A job told to wait for a rate limit's slot more often than max_attempts still runs."""
    clock = ManualClock()
    calls: list[int] = []
    handlers = JobHandlers()

    async def paced(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) <= 5:
            raise RetryLater("channel is busy: next send slot in 7s", delay=7, counts=False)

    handlers.register("notify.paced", paced, subscribe=True)
    store = await open_store(tmp_path, clock, handlers.subscribers)
    try:
        await incident(store, clock)
        work = runner(store, handlers, clock)  # max_attempts 3
        for _ in range(8):
            await work.run_due()
            clock.advance(7)
        assert len(calls) == 6
        assert set(calls) == {1}  # every run was its first attempt
        stats = await store.stats()
        assert stats.jobs_failed == 0 and stats.jobs_pending == 0
    finally:
        await store.close()


async def test_incident_briefs_keep_the_order_asked_and_skip_unknown_ids(tmp_path: Path) -> None:
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        first = await incident(store, clock)
        await IncidentActions(store, clock).acknowledge(first, actor="ana", source="slack")
        briefs = await store.incident_briefs([999, first, 998])
        assert [(b.id, b.status, b.severity) for b in briefs] == [
            (first, Status.ACKNOWLEDGED, Severity.P1)
        ]
        full = await store.get_incident(first)
        assert briefs[0].title == full.title
        assert await store.incident_briefs([]) == []
        assert len(await store.incident_briefs([first] * 1200)) == 1200  # chunked IN lists
    finally:
        await store.close()


async def test_asking_for_due_jobs_when_none_are_due_takes_no_write_lock(tmp_path: Path) -> None:
    """The runner asks after every job it finishes; with nothing due that question must
    not queue behind (or hold up) a writer."""
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    writer = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        await store.enqueue_job("notify.test", "later", due_at=clock.now() + 60)
        writer.execute("BEGIN IMMEDIATE")  # another writer holds the file meanwhile
        claimed = await asyncio.wait_for(store.claim_jobs(clock.now(), 10, ["notify.test"]), 2)
        writer.execute("ROLLBACK")
        assert claimed == []
        clock.advance(61)
        [job] = await store.claim_jobs(clock.now(), 10, ["notify.test"])
        assert job.key == "later"
    finally:
        writer.close()
        await store.close()


async def test_two_claims_at_once_never_take_the_same_job(tmp_path: Path) -> None:
    """Claims read first and write after: a job both saw goes to one of them only."""
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        await store.enqueue_job("notify.test", "once", due_at=clock.now())
        first, second = await asyncio.gather(
            store.claim_jobs(clock.now(), 10, ["notify.test"]),
            store.claim_jobs(clock.now(), 10, ["notify.test"]),
        )
        assert [job.key for job in first + second] == ["once"]
        assert [job.attempts for job in first + second] == [1]
    finally:
        await store.close()


async def test_an_inbox_kept_in_the_store_file_moves_to_its_own(tmp_path: Path) -> None:
    """A database from before the inbox had a file of its own: its rows move over with
    their ids and outcomes; the pending one is still pending, the others are not."""
    db = tmp_path / "s.db"
    old = sqlite3.connect(db, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(f"BEGIN;{MIGRATIONS[0]}PRAGMA user_version = 1;COMMIT;")
    old.executemany(
        "INSERT INTO inbox (id, source, body, received_at, processed_at, result)"
        " VALUES (?, 'alertmanager', ?, 1.0, ?, ?)",
        [
            (7, '{"n": 7}', 2.0, "applied (incident #1)"),
            (8, '{"n": 8}', 1.0, "duplicate"),
            (9, '{"n": 9}', None, None),
        ],
    )
    old.close()
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        [pending] = await store.pending_payloads(10)
        assert (pending.id, pending.body) == (9, '{"n": 9}')
        assert await store.enqueue_payload("alertmanager", '{"n": 10}') == 10
        tables = await store._run(
            lambda c: [r[0] for r in c.execute("SELECT name FROM main.sqlite_master")]
        )
        assert "inbox" not in tables and "inbox_done" in tables
        [[page_size]] = await store._run(lambda c: c.execute("PRAGMA page_size").fetchall())
        assert page_size == 4096  # an existing file keeps its page size
    finally:
        await store.close()
    moved = sqlite3.connect(f"{db}-inbox")
    rows = moved.execute("SELECT id, result FROM inbox ORDER BY id").fetchall()
    moved.close()
    assert rows == [(7, "applied (incident #1)"), (8, "duplicate"), (9, None), (10, None)]


async def test_a_new_store_file_has_small_pages(tmp_path: Path) -> None:
    """Most writes change one small row, and a WAL frame is a whole page."""
    store = await open_store(tmp_path, ManualClock(), Subscriptions())
    try:
        sizes = await store._run(
            lambda c: [
                c.execute(f"PRAGMA {db}.page_size").fetchone()[0] for db in ("main", "received")
            ]
        )
    finally:
        await store.close()
    assert sizes == [1024, 4096]  # the inbox's rows are payloads of a few KB


async def test_pruning_keeps_pending_payloads_and_never_reuses_an_id(tmp_path: Path) -> None:
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        ids = [await store.enqueue_payload("alertmanager", f'{{"n": {n}}}') for n in range(4)]
        await store.skip_payloads(ids[:2], "duplicate", 100.0)
        await store.prune(before=200.0)
        assert [item.id for item in await store.pending_payloads(10)] == ids[2:]
        await store.skip_payloads(ids[2:], "duplicate", 100.0)
        await store.prune(before=200.0)
        assert await store.pending_payloads(10) == []
        # The newest row stays: the next payload gets a new id, and is pending.
        later = await store.enqueue_payload("alertmanager", '{"n": 4}')
        assert later == ids[-1] + 1
        assert [item.id for item in await store.pending_payloads(10)] == [later]
        left = await store._run(
            lambda c: [
                c.execute("SELECT id FROM received.inbox ORDER BY id").fetchall(),
                c.execute("SELECT id FROM inbox_done ORDER BY id").fetchall(),
            ]
        )
        assert [[r[0] for r in rows] for rows in left] == [[ids[-1], later], [ids[-1]]]
    finally:
        await store.close()


async def test_outcomes_of_jobs_finishing_together_are_each_recorded(tmp_path: Path) -> None:
    """Outcomes that arrive together share one commit; each is recorded as given, and a
    commit that fails fails every caller in it."""
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        for n in range(30):
            await store.enqueue_job("notify.test", f"job-{n}", due_at=clock.now())
        jobs = await store.claim_jobs(clock.now(), 30, ["notify.test"])
        assert len(jobs) == 30
        now = clock.now()
        await asyncio.gather(
            *(store.finish_job(job.id, now) for job in jobs[:10]),
            *(store.retry_job(job.id, now + 60, "later", now) for job in jobs[10:20]),
            *(store.fail_job(job.id, "broken", now) for job in jobs[20:]),
        )
        sql = "SELECT status, due_at, last_error FROM jobs ORDER BY id"
        rows = await store._run(lambda c: c.execute(sql).fetchall())
        assert [tuple(r) for r in rows] == (
            [("done", now, None)] * 10
            + [("pending", now + 60, "later")] * 10
            + [("failed", now, "broken")] * 10
        )
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file past the timeout
        try:
            await store._run(lambda c: c.execute("PRAGMA busy_timeout = 100"))
            outcomes = await asyncio.gather(
                *(store.finish_job(job.id, now) for job in jobs[10:13]), return_exceptions=True
            )
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert [type(outcome).__name__ for outcome in outcomes] == ["StoreUnavailable"] * 3
    finally:
        await store.close()


async def test_pruning_a_large_inbox_goes_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk is one transaction the inbox writer waits for, never the whole backlog."""
    monkeypatch.setattr(sqlite_store, "PRUNE_CHUNK", 2)
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        ids = [await store.enqueue_payload("alertmanager", f'{{"n": {n}}}') for n in range(7)]
        await store.skip_payloads(ids, "duplicate", 100.0)
        assert await store.prune(before=200.0) == 6  # all but the newest
        left = await store._run(lambda c: c.execute("SELECT id FROM received.inbox").fetchall())
        assert [row[0] for row in left] == [ids[-1]]
    finally:
        await store.close()


async def test_a_replaced_inbox_file_never_hands_out_an_id_already_done(tmp_path: Path) -> None:
    """The inbox's file deleted (to free space, say) while the store's is kept: the next
    payload is numbered after the last one processed, so it is processed too."""
    clock = ManualClock()
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        ids = [await store.enqueue_payload("alertmanager", f'{{"n": {n}}}') for n in range(3)]
        await store.skip_payloads(ids, "duplicate", clock.now())
    finally:
        await store.close()
    for suffix in ("", "-wal", "-shm"):  # the inbox's file and what SQLite keeps beside it
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{tmp_path}/s.db-inbox{suffix}")
    store = await open_store(tmp_path, clock, Subscriptions())
    try:
        later = await store.enqueue_payload("alertmanager", '{"n": 3}')
        assert later == ids[-1] + 1
        assert [item.id for item in await store.pending_payloads(10)] == [later]
    finally:
        await store.close()
