"""SQLite store: one connection on one thread, WAL, and group commit for the inbox.

Every call runs on a single dedicated thread, so the event loop never blocks on disk
and transactions never interleave. Webhook payloads that arrive together are
committed together: each waits for the one commit that covers it (group commit),
which keeps durable acks cheap under load.

The inbox is a database file of its own (``<db>-inbox``, attached as ``received``),
written by the inbox writer alone. SQLite lets one transaction write a file at a time,
so with one file an ack's commit waited for whatever background transaction was in
progress, and its fsync flushed that transaction's pages too. Now nothing the workers
do stands between a webhook and its commit. What processing made of a payload is
recorded in the store's own file (``inbox_done``), in the transaction that applied it,
so applying a payload and marking it done stay one atomic step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Container, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bot.core.alerts import AlertGroup
from bot.core.incidents import (
    Event,
    Incident,
    IncidentBrief,
    Status,
    check_transition,
)
from bot.errors import NotFound, StoreError, StoreUnavailable
from bot.settings import Severity
from bot.store import rows as shared
from bot.store import sqlite_changes as changes
from bot.store import sqlite_incidents as inc
from bot.store import sqlite_queries as queries
from bot.store.base import (
    ApplyResult,
    Decided,
    InboxItem,
    IncidentChange,
    IncidentQuery,
    Job,
    PlaybookStats,
    RateLimit,
    Stats,
    Store,
    Subscriptions,
)
from bot.store.inbox_child import WriteLock, private_file
from bot.store.inbox_writer import (
    InboxBatches,
    InboxRow,
    InboxWriter,
    WriterError,
    insert_rows,
    pack,
    store_error,
    unpack,
)
from bot.store.migrations import INBOX_MIGRATIONS, INBOX_MOVED, MIGRATIONS
from bot.store.thread import NORMAL, URGENT, StoreThread

log = logging.getLogger(__name__)
T = TypeVar("T")

# A job's outcome waiting for its commit: status, due_at, last_error, now, job id, future.
JobUpdate = tuple[str, float | None, str | None, float, int, "asyncio.Future[None]"]
PAGE_SIZE = 1024  # bytes, for a new store file
CHECKPOINT_EVERY = 0.2  # s
PRUNE_CHUNK = 2000  # inbox rows deleted per transaction
FULL_MEMORY = 60.0  # s: a webhook commit refused for want of space keeps ping() failing


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        subscribers: Subscriptions | None = None,
        busy_timeout: float = 5.0,
        clock: Callable[[], float],
        inbox_writer: bool = True,
    ) -> None:
        self.path = path
        self.inbox_path = path if path == ":memory:" else f"{path}-inbox"
        self.subscribers = subscribers or Subscriptions()
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._thread: StoreThread | None = None
        self._conn: sqlite3.Connection | None = None
        # Webhook payloads are committed by a child process (see inbox_writer); a database
        # in memory cannot be shared with one, so there the store thread commits them.
        self._writer: InboxWriter | None = None
        # The CLI's commands take no webhooks: they need no writer process.
        self._wants_writer = inbox_writer
        self._write_lock: WriteLock | None = None  # the inbox's, shared with its writer
        # Every inbox row up to this id is done (ids only grow): the scan for pending
        # payloads starts after it. Found again by one full scan after a restart.
        self._inbox_floor = 0
        self._job_updates: list[JobUpdate] = []  # see _set_job_status
        self._job_writer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.inbox_signal = asyncio.Event()
        self._inbox = InboxBatches(
            lambda: self._writer,
            self._commit_inbox,
            signal=self.inbox_signal,
            outcome=self._full_or_not,
        )
        self.job_signal = asyncio.Event()
        self._full: tuple[float, str] | None = None  # when a webhook commit found no space

    # plumbing ---------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._submit(NORMAL, lambda: self._call(fn, args))

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """``_run`` for a transaction that only reads (a name for what it does: in WAL
        mode a read holds no lock that a writer waits for)."""
        return await self._submit(NORMAL, lambda: self._call(fn, args))

    async def _write_inbox(self, fn: Callable[..., T], *args: Any) -> T:
        """``_run`` for a transaction that writes the inbox's file (pruning it): it takes
        the inbox writer's lock, after any commit a webhook is waiting for."""
        return await self._submit(NORMAL, lambda: self._call(fn, args, inbox=True))

    async def _submit(self, priority: int, work: Callable[[], T]) -> T:
        if self._thread is None:
            raise StoreUnavailable("store is closed")
        try:
            future = self._thread.submit(priority, work)
        except RuntimeError:
            raise StoreUnavailable("store is closed") from None
        return await asyncio.wrap_future(future)

    def _call(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        *,
        inbox: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction: commit on success, roll back on error.

        The inbox's file is written with ``synchronous=FULL`` (on disk before the ack,
        even across a power loss); the store's own with ``NORMAL``, which in WAL mode
        survives a process crash and costs no fsync. Losing such a write to a power cut
        only means redoing idempotent work from the inbox. ``inbox``: ``fn`` writes the
        inbox's file, so it takes the lock the inbox writer takes.
        """
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("store is closed")
        try:
            lock = self._write_lock if inbox else None
            with lock or contextlib.nullcontext(), conn:
                return fn(conn, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"store cannot commit: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store error: {exc}") from exc

    def _connect(self) -> None:
        if self.path != ":memory:":
            # Payloads and incidents hold whatever alerts carry: private to this user. A
            # folder made here is 0700; the files are made 0600 before SQLite opens them,
            # and SQLite gives their -wal and -shm the same mode. Files an earlier version
            # left readable by others are made private.
            Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            for path in (self.path, self.inbox_path):
                changed = private_file(path)
                if changed is not None:
                    log.warning("store files: %s", changed)
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level="DEFERRED",
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        # A new store's pages are 1 KiB (SQLite's default until 3.12): most writes change a
        # row of a hundred bytes or so (a job's status, an incident's state), and a WAL
        # frame is a whole page, so 4 KiB pages wrote about three times the bytes (200 MB
        # against 73 MB of WAL and checkpoint writes for 1,000 webhooks, at no more CPU),
        # and each checkpoint's fsync held up the inbox's as long. An existing file keeps
        # its size (in WAL mode it cannot change).
        conn.execute(f"PRAGMA main.page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoints run on this thread between transactions (see _checkpoints), not at the
        # end of whichever commit crosses SQLite's threshold.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("ATTACH DATABASE ? AS received", (self.inbox_path,))
        conn.execute("PRAGMA received.journal_mode=WAL")
        conn.execute("PRAGMA received.synchronous=FULL")
        if self.path != ":memory:":
            self._write_lock = WriteLock(self.inbox_path, self._busy_timeout)
        self._conn = conn
        self._migrate(conn, "received", INBOX_MIGRATIONS, self.inbox_path)
        self._migrate(conn, "main", MIGRATIONS, self.path)
        if self._call(_continue_inbox_ids, (self._clock(),), inbox=True):
            log.warning(
                "store: %s holds fewer payloads than %s has processed (replaced or deleted?);"
                " new payloads are numbered after the last processed one",
                self.inbox_path,
                self.path,
            )

    def _migrate(self, conn: sqlite3.Connection, schema: str, steps: list[str], path: str) -> None:
        version = conn.execute(f"PRAGMA {schema}.user_version").fetchone()[0]
        if version > len(steps):
            raise StoreError(f"{path}: schema version {version} is newer than this alertpilot")
        for number, script in enumerate(steps[version:], start=version + 1):
            log.info("store: applying migration %d to %s", number, path)
            if schema == "main" and number == INBOX_MOVED:
                self._call(_copy_inbox, (), inbox=True)
            conn.executescript(
                f"BEGIN;\n{script}\nPRAGMA {schema}.user_version = {number};\nCOMMIT;"
            )

    async def open(self) -> None:
        self._thread = StoreThread()
        try:
            await self._submit(URGENT, self._connect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open store {self.path}: {exc}") from exc
        if self.path != ":memory:" and self._wants_writer:
            self._writer = InboxWriter(self.inbox_path, self._busy_timeout)
            try:
                await self._writer.start()
            except WriterError as exc:
                raise StoreUnavailable(f"cannot start the inbox writer: {exc}") from exc
            self._checkpointer = asyncio.create_task(self._checkpoints(), name="store-checkpoint")

    async def _checkpoints(self, every: float = CHECKPOINT_EVERY) -> None:
        """Copy the WAL into the store's file every ``every`` seconds (PASSIVE: readers go
        on). It runs on the store thread, between two transactions: the thread is the
        file's only writer, so the checkpoint copies everything and the next commit
        starts the WAL again from its beginning. Run from another connection it would
        race the next commit and seldom finish, and the WAL would only grow, filling the
        disk and making every write dearer. The inbox's writer checkpoints its own file.

        Often, so that each is small: a checkpoint ends in an fsync of what it copied, and
        the inbox's commits (an ack waits for each) queue behind it at the disk. Once a
        second, under 200 webhooks/s, each stalled acks for about 25 ms."""
        while True:
            await asyncio.sleep(every)
            try:
                await self._run(_checkpoint)
            except StoreError as exc:
                log.warning("store: checkpoint failed: %s", exc)

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        if self._job_writer is not None:
            await asyncio.shield(self._job_writer)
        await self._inbox.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        if self._thread is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._submit(NORMAL, conn.close)
        lock, self._write_lock = self._write_lock, None
        if lock is not None:
            lock.close()
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.shutdown)

    async def ping(self) -> None:
        """A small write to each file (the inbox's by its writer, which takes its write
        lock and lets go), and no webhook commit refused for want of space lately
        (rewriting one row in place can still work on a full disk, where a payload no
        longer fits)."""
        sql = (
            "INSERT INTO kv (key, value) VALUES ('ping', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        now = self._clock()
        await self._submit(URGENT, lambda: self._call(lambda c: c.execute(sql, (str(now),)), ()))
        if self._writer is not None:
            try:
                await self._writer.ping()
            except WriterError as exc:
                raise store_error(exc) from exc.error
        full = self._full
        if full is not None and now - full[0] < FULL_MEMORY:
            raise StoreUnavailable(f"a webhook commit failed {now - full[0]:.0f}s ago: {full[1]}")

    # inbox ------------------------------------------------------------------
    def enqueue_payload(
        self, source: str, body: str, *, result: str | None = None
    ) -> asyncio.Future[int]:
        return self._inbox.add(source, body, self._clock(), result)

    def _full_or_not(self, error: StoreError | None) -> None:
        """A webhook's commit refused for want of space keeps ``ping`` failing a while."""
        if error is None:
            self._full = None
            return
        cause = error.__cause__
        if (
            isinstance(cause, sqlite3.Error)
            and cause.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL
        ):
            self._full = (self._clock(), str(error))

    async def _commit_inbox(self, rows: list[InboxRow]) -> list[int]:
        """In memory, or a command's store: the store thread commits."""
        work = functools.partial(self._call, insert_rows, (pack(rows),), inbox=True)
        return await self._submit(URGENT, work)

    @property
    def inbox_writer_pid(self) -> int | None:
        """The process committing webhook payloads (None for a database in memory)."""
        return None if self._writer is None else self._writer.pid

    async def set_max_pages(self, pages: int | None) -> int:
        """Cap both database files at ``pages`` pages each (None: the pages each has now)
        on every connection that writes (SQLite's ``max_page_count`` is per connection);
        return the store's cap. A commit that needs a page beyond it fails as on a full
        disk."""

        def cap(conn: sqlite3.Connection) -> int:
            capped = []
            for schema in ("main", "received"):
                have = int(conn.execute(f"PRAGMA {schema}.page_count").fetchone()[0])
                wanted = int(pages or have)
                capped.append(conn.execute(f"PRAGMA {schema}.max_page_count = {wanted}"))
            return int(capped[0].fetchone()[0])

        capped = await self._run(cap)
        if self._writer is not None:
            await self._writer.max_pages(pages or 0)
        return capped

    async def pending_payloads(
        self, limit: int, *, bodies_except: Container[int] = ()
    ) -> list[InboxItem]:
        def read(conn: sqlite3.Connection) -> list[InboxItem]:
            floor = self._inbox_floor
            # The newest row first: each statement reads the files as they are when it
            # starts, and a row committed between the two must not count as done.
            newest = conn.execute("SELECT MAX(id) FROM received.inbox").fetchone()[0] or 0
            rows = conn.execute(_PENDING + " ORDER BY id LIMIT ?", (floor, limit)).fetchall()
            # None is pending below the first pending row (or up to the newest, if none
            # is), and a done row stays done.
            self._inbox_floor = max(floor, rows[0][0] - 1 if rows else newest)
            missing = [row[0] for row in rows if row[0] not in bodies_except]
            bodies: dict[int, str] = {}
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                marks = ",".join("?" * len(chunk))
                stored = conn.execute(
                    f"SELECT id, body FROM received.inbox WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                )
                bodies.update((inbox_id, unpack(body)) for inbox_id, body in stored)
            return [InboxItem(r[0], r[1], bodies.get(r[0], ""), r[2]) for r in rows]

        return await self._read(read)

    async def skip_payloads(self, inbox_ids: Sequence[int], result: str, now: float) -> None:
        await self._run(
            lambda c: c.executemany(_MARK_DONE, [(inbox_id, now, result) for inbox_id in inbox_ids])
        )

    async def apply_group(
        self, inbox_id: int, group: AlertGroup, severity: Severity, now: float
    ) -> ApplyResult:
        def apply(conn: sqlite3.Connection) -> ApplyResult:
            result = inc.apply_group(conn, self.subscribers, group, severity, now)
            outcome = result.note or ("duplicate" if result.duplicate else "applied")
            _mark_processed(conn, inbox_id, now, outcome, result.incident_id)
            return result

        result = await self._run(apply)
        if result.events:
            self.job_signal.set()
        return result

    async def apply_groups(
        self, items: Sequence[tuple[int, AlertGroup, Severity]], now: float
    ) -> list[ApplyResult]:
        def apply(conn: sqlite3.Connection) -> list[ApplyResult]:
            results = []
            for inbox_id, group, severity in items:
                result = inc.apply_group(conn, self.subscribers, group, severity, now)
                outcome = result.note or ("duplicate" if result.duplicate else "applied")
                _mark_processed(conn, inbox_id, now, outcome, result.incident_id)
                results.append(result)
            return results

        results = await self._run(apply)
        if any(result.events for result in results):
            self.job_signal.set()
        return results

    async def reject_payload(self, inbox_id: int, reason: str, now: float) -> None:
        await self._run(_mark_processed, inbox_id, now, f"rejected: {reason}", None)

    # incidents --------------------------------------------------------------
    async def get_incident(self, incident_id: int, *, timeline: bool = True) -> Incident:
        def read(conn: sqlite3.Connection) -> Incident:
            row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise NotFound(f"no incident #{incident_id}")
            return inc.read_incident(conn, row, timeline)

        return await self._read(read)

    async def find_incident(self, key: str) -> Incident | None:
        def read(conn: sqlite3.Connection) -> Incident | None:
            row = conn.execute("SELECT * FROM incidents WHERE key = ?", (key,)).fetchone()
            return None if row is None else inc.read_incident(conn, row, True)

        return await self._read(read)

    async def incident_briefs(self, ids: Sequence[int]) -> list[IncidentBrief]:
        def read(conn: sqlite3.Connection) -> list[IncidentBrief]:
            found: dict[int, IncidentBrief] = {}
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    "SELECT id, status, severity, title FROM incidents"  # noqa: S608
                    f" WHERE id IN ({marks})",
                    chunk,
                ):
                    found[row[0]] = IncidentBrief(row[0], Status(row[1]), Severity(row[2]), row[3])
            return [found[i] for i in ids if i in found]

        return await self._read(read) if ids else []

    async def list_incidents(
        self,
        *,
        status: Status | None = None,
        limit: int = 50,
        offset: int = 0,
        before: int | None = None,
    ) -> list[Incident]:
        def read(conn: sqlite3.Connection) -> list[Incident]:
            conditions: list[str] = []
            args: list[str | int] = []
            if status is not None:
                conditions.append("status = ?")
                args.append(status.value)
            if before is not None:
                conditions.append("id < ?")
                args.append(before)
            where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
            rows = conn.execute(
                f"SELECT * FROM incidents {where} ORDER BY id DESC LIMIT ? OFFSET ?",  # noqa: S608
                (*args, limit, offset),
            ).fetchall()
            return [inc.read_incident(conn, row, False) for row in rows]

        return await self._read(read)

    async def search_incidents(self, query: IncidentQuery) -> list[Incident]:
        return await self._read(queries.search_incidents, query)

    async def playbook_stats(self, *, since: float | None = None) -> list[PlaybookStats]:
        return await self._read(queries.playbook_stats, since)

    async def transition(
        self,
        incident_id: int,
        new: Status,
        *,
        actor: str,
        message: str,
        now: float,
        data: Mapping[str, Any] | None = None,
    ) -> Incident:
        def change(conn: sqlite3.Connection) -> Incident:
            changes.write_lock(conn)  # the check must see the status it changes
            row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise NotFound(f"no incident #{incident_id}")
            check_transition(Status(row["status"]), new)
            sets = shared.transition_fields(new, actor, now)
            assignments = ", ".join(f"{name} = ?" for name in sets)
            conn.execute(
                f"UPDATE incidents SET {assignments} WHERE id = ?",  # noqa: S608 - fixed names
                (*sets.values(), incident_id),
            )
            inc.add_event(
                conn,
                self.subscribers,
                incident_id,
                actor,
                shared.TRANSITION_EVENTS[new],
                message,
                now,
                data,
            )
            updated = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,))
            return inc.read_incident(conn, updated.fetchone(), True)

        result = await self._run(change)
        self.job_signal.set()
        return result

    async def update_incident(
        self,
        incident_id: int,
        *,
        now: float,
        severity: Severity | None = None,
        playbook: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Incident:
        def change(conn: sqlite3.Connection) -> Incident:
            changes.write_lock(conn)  # the merge must read what it overwrites
            row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise NotFound(f"no incident #{incident_id}")
            merged = json.loads(row["data"]) | dict(data or {})
            conn.execute(
                "UPDATE incidents SET severity = ?, playbook = ?, data = ?, updated_at = ? "
                "WHERE id = ?",
                (
                    (severity or Severity(row["severity"])).value,
                    playbook if playbook is not None else row["playbook"],
                    inc.dumps(merged),
                    now,
                    incident_id,
                ),
            )
            if severity is not None and severity.value != row["severity"]:
                inc.reprioritise(conn, incident_id)
            updated = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,))
            return inc.read_incident(conn, updated.fetchone(), False)

        return await self._run(change)

    async def append_event(
        self,
        incident_id: int,
        *,
        actor: str,
        kind: str,
        message: str,
        now: float,
        data: Mapping[str, Any] | None = None,
        notify: bool = True,
    ) -> Event:
        event = await self._run(
            inc.add_event, self.subscribers, incident_id, actor, kind, message, now, data, notify
        )
        if notify:
            self.job_signal.set()
        return event

    async def events(self, incident_id: int, *, after: int = 0) -> list[Event]:
        return await self._read(inc.read_events, incident_id, after)

    async def change_incident(
        self, incident_id: int, change: Callable[[Incident], IncidentChange], *, now: float
    ) -> list[Event]:
        events = await self._run(
            changes.change_incident, self.subscribers, incident_id, change, now
        )
        self.job_signal.set()
        return events

    async def decide(
        self, incident_id: int, decide: Callable[[Incident], Decided[T]], *, now: float
    ) -> T:
        def run(conn: sqlite3.Connection) -> tuple[list[Event], T]:
            return changes.decide_incident(conn, self.subscribers, incident_id, decide, now)

        _, result = await self._run(run)
        self.job_signal.set()
        return result

    # jobs ---------------------------------------------------------------------
    async def enqueue_job(
        self,
        kind: str,
        key: str,
        *,
        due_at: float,
        incident_id: int | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> bool:
        now = self._clock()
        row = (kind, key, incident_id, inc.dumps(dict(payload or {})), due_at)
        added = await self._run(lambda c: inc.insert_jobs(c, self.subscribers, [row], now) == 1)
        if added:
            self.job_signal.set()
        return bool(added)

    async def claim_jobs(
        self, now: float, limit: int, kinds: Sequence[str], *, lane: str | None = None
    ) -> list[Job]:
        marks = ",".join("?" * len(kinds))
        # Jobs of one kind for one incident run one at a time, in order: a later Slack
        # update never overtakes the post it updates. A lane's claim walks its own
        # pending jobs in the jobs_lane index: most severe first, then the oldest.
        where, order, args = "", "due_at, id", tuple[str, ...]()
        if lane is not None:
            where, order, args = " AND lane = ?", "priority, due_at, id", (lane,)
        sql = (
            f"SELECT * FROM jobs j WHERE status = 'pending'{where} AND due_at <= ?"  # noqa: S608
            f" AND kind IN ({marks}) AND NOT EXISTS (SELECT 1 FROM jobs e"
            " WHERE e.incident_id = j.incident_id AND e.kind = j.kind AND e.id < j.id"
            f" AND e.status IN ('pending', 'running')) ORDER BY {order} LIMIT ?"
        )

        # The runner asks after every job it finishes, often when nothing is due: the
        # question is a read, and only the claim itself takes the write lock.
        if not kinds:
            return []
        params = (*args, now, *kinds, limit)
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        if not rows:
            return []

        def claim(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            # Still pending: another claim may have taken it between the read and here.
            update = (
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ? "
                "WHERE id = ? AND status = 'pending'"
            )
            return [r for r in rows if conn.execute(update, (now, r["id"])).rowcount == 1]

        return [shared.job_from_row(r) for r in await self._run(claim)]

    async def finish_job(self, job_id: int, now: float) -> None:
        await self._set_job_status(job_id, "done", None, None, now)

    async def retry_job(self, job_id: int, due_at: float, error: str, now: float) -> None:
        await self._set_job_status(job_id, "pending", due_at, error, now)

    async def _set_job_status(
        self, job_id: int, status: str, due_at: float | None, error: str | None, now: float
    ) -> None:
        """Record a job's outcome, in one transaction with the outcomes of the jobs that
        finish meanwhile (group commit, as for the inbox). Every job writes one, most of
        them within milliseconds of each other; one transaction each rewrote the same
        pages of the jobs table and its indexes again and again (about 12 KB of WAL per
        outcome). Each caller still returns only once its own outcome is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._job_updates.append((status, due_at, error, now, job_id, future))
        if self._job_writer is None or self._job_writer.done():
            self._job_writer = asyncio.create_task(self._write_job_updates())
        await future

    async def _write_job_updates(self) -> None:
        await asyncio.sleep(0)  # the jobs finishing in this turn of the loop join in
        while self._job_updates:
            batch, self._job_updates = self._job_updates, []
            try:
                await self._run(_set_jobs, [update[:5] for update in batch])
            except BaseException as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for *_, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def defer_job(self, job_id: int, due_at: float, reason: str, now: float) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE jobs SET status = 'pending', due_at = ?, attempts = MAX(attempts - 1, 0),"
                " last_error = ?, updated_at = ? WHERE id = ?",
                (due_at, reason, now, job_id),
            )
        )

    async def fail_job(self, job_id: int, error: str, now: float) -> None:
        await self._set_job_status(job_id, "failed", None, error, now)

    async def next_job_due(self, kinds: Sequence[str]) -> float | None:
        if not kinds:
            return None
        marks = ",".join("?" * len(kinds))
        row = await self._read(
            lambda c: c.execute(
                f"SELECT MIN(due_at) FROM jobs WHERE status = 'pending' AND kind IN ({marks})",  # noqa: S608
                tuple(kinds),
            ).fetchone()
        )
        return None if row[0] is None else float(row[0])

    async def release_running_jobs(self) -> int:
        return int(
            await self._run(
                lambda c: (
                    c.execute(
                        "UPDATE jobs SET status = 'pending' WHERE status = 'running'"
                    ).rowcount
                )
            )
        )

    async def route_jobs(self) -> int:
        lanes = self.subscribers.lanes

        def route(conn: sqlite3.Connection) -> int:
            moved = 0
            for kind, lane in lanes.items():
                moved += conn.execute(
                    "UPDATE jobs SET lane = ? WHERE kind = ? AND lane != ?"
                    " AND status IN ('pending', 'running')",
                    (lane, kind, lane),
                ).rowcount
            return moved

        return int(await self._run(route)) if lanes else 0

    # key-value ---------------------------------------------------------------
    async def kv_get(self, key: str, now: float) -> str | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, now),
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def kv_set(self, key: str, value: str, *, now: float, ttl: float | None = None) -> None:
        expires = None if ttl is None else now + ttl
        await self._run(
            lambda c: c.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?,?,?) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, value, expires),
            )
        )

    # events seen ---------------------------------------------------------------
    async def seen_event(self, source: str, event_id: str) -> str | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT result FROM seen_events WHERE source = ? AND id = ?", (source, event_id)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def remember_event(self, source: str, event_id: str, result: str, *, at: float) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO seen_events (source, id, at, result) VALUES (?,?,?,?)",
                (source, event_id, at, result),
            )
        )

    async def forget_events(self, source: str, *, before: float) -> int:
        return int(
            await self._run(
                lambda c: (
                    c.execute(
                        "DELETE FROM seen_events WHERE source = ? AND at < ?", (source, before)
                    ).rowcount
                )
            )
        )

    async def take_rate_slot(self, limits: Sequence[RateLimit], *, now: float) -> RateLimit | None:
        return await self._run(changes.take_rate_slot, limits, now)

    async def rate_entries(self, bucket: str, *, since: float, now: float) -> list[float]:
        return await self._run(changes.rate_entries, bucket, since, now)

    async def stats(self) -> Stats:
        def read(conn: sqlite3.Connection) -> Stats:
            depth, oldest = conn.execute(
                f"SELECT COUNT(*), MIN(received_at) FROM ({_PENDING})",  # noqa: S608
                (self._inbox_floor,),
            ).fetchone()
            # A timer waiting for its time; once tried, a retry is backlog like any job.
            marks = ",".join("?" * len(timers))
            timer = (
                f"(kind IN ({marks}) AND status = 'pending' AND due_at > ? AND attempts = 0)"
                if timers
                else "0"
            )
            pending, scheduled, failed = conn.execute(
                f"SELECT SUM(status IN ('pending', 'running') AND NOT {timer}), SUM({timer}),"  # noqa: S608
                " SUM(status = 'failed') FROM jobs",
                (*timers, now, *timers, now) if timers else (),
            ).fetchone()
            by_severity = {
                row[0]: row[1]
                for row in conn.execute(
                    "SELECT severity, COUNT(*) FROM incidents WHERE status != 'resolved' "
                    "GROUP BY severity"
                )
            }
            return Stats(depth, oldest, pending or 0, failed or 0, by_severity, scheduled or 0)

        now, timers = self._clock(), sorted(self.subscribers.timers)
        return await self._read(read)

    async def prune(self, before: float) -> int:
        def delete_payloads(conn: sqlite3.Connection) -> int:
            # The oldest first, a chunk per transaction: the inbox writer waits for each.
            # The newest row stays, so no id is ever handed out twice (inbox_done keys on it).
            return int(
                conn.execute(
                    "DELETE FROM received.inbox WHERE id IN ("
                    " SELECT i.id FROM received.inbox AS i"
                    " LEFT JOIN inbox_done AS d ON d.id = i.id"
                    " WHERE i.id < (SELECT MAX(id) FROM received.inbox)"
                    " AND (i.processed_at < ? OR d.processed_at < ?) ORDER BY i.id LIMIT ?)",
                    (before, before, PRUNE_CHUNK),
                ).rowcount
            )

        def delete(conn: sqlite3.Connection) -> int:
            # After the payloads they speak of: a row never loses its mark while it is kept.
            conn.execute("DELETE FROM inbox_done WHERE id < (SELECT MIN(id) FROM received.inbox)")
            gone = conn.execute(
                "DELETE FROM jobs WHERE status IN ('done', 'cancelled') AND updated_at < ?",
                (before,),
            ).rowcount
            gone += conn.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at < ?", (before,)
            ).rowcount
            return int(gone)

        payloads = 0
        while True:
            gone = await self._write_inbox(delete_payloads)
            payloads += gone
            if gone < PRUNE_CHUNK:
                break
        return payloads + await self._run(delete)


# Rows after a floor that are neither stored as repeats nor done.
_PENDING = (
    "SELECT id, source, received_at FROM received.inbox AS i"
    " WHERE i.id > ? AND i.processed_at IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM inbox_done AS d WHERE d.id = i.id)"
)
_MARK_DONE = "INSERT OR REPLACE INTO inbox_done (id, processed_at, result) VALUES (?, ?, ?)"


def _mark_processed(
    conn: sqlite3.Connection, inbox_id: int, now: float, result: str, incident_id: int | None
) -> None:
    conn.execute(_MARK_DONE, (inbox_id, now, shared.outcome_text(result, incident_id)))


def _copy_inbox(conn: sqlite3.Connection) -> None:
    """Before the inbox moved to its own file it was a table of the store's: copy its rows
    over, ids and outcomes kept (a row processed before has its outcome on it). Run
    again after a crash, it copies nothing twice."""
    conn.execute(
        "INSERT OR IGNORE INTO received.inbox"
        " (id, source, body, received_at, processed_at, result)"
        " SELECT id, source, body, received_at, processed_at, result FROM main.inbox"
    )


def _continue_inbox_ids(conn: sqlite3.Connection, now: float) -> bool:
    """An inbox file newer than the store's (deleted to free space, restored from an
    older backup) would hand out ids that inbox_done already marks done, and those
    payloads would never be processed. A placeholder row at the last done id makes the
    next payload's id follow it. True if one was needed."""
    done = conn.execute("SELECT MAX(id) FROM inbox_done").fetchone()[0] or 0
    have = conn.execute("SELECT MAX(id) FROM received.inbox").fetchone()[0] or 0
    if done <= have:
        return False
    conn.execute(
        "INSERT INTO received.inbox (id, source, body, received_at, processed_at, result)"
        " VALUES (?, 'alertpilot', '', ?, ?, 'placeholder: ids continue after it')",
        (done, now, now),
    )
    return True


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA main.wal_checkpoint(PASSIVE)")


def _set_jobs(
    conn: sqlite3.Connection, updates: Sequence[tuple[str, float | None, str | None, float, int]]
) -> None:
    """Each (status, due_at or None to keep it, last_error, now, job id), in order."""
    conn.executemany(
        "UPDATE jobs SET status = ?, due_at = COALESCE(?, due_at), last_error = ?, updated_at = ? "
        "WHERE id = ?",
        updates,
    )
