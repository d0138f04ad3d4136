"""PostgreSQL store: the same ``Store`` as SQLite's, shared by several replicas.

psycopg 3 with its async connection pool; every call is one transaction on a pooled
connection (a single statement autocommitted), with ``synchronous_commit=on``. A webhook
is acknowledged only once its payload is on the server's disk: payloads are committed by
a child process with a connection of its own, those that arrive together sharing one
commit, as on SQLite (``bot.store.inbox_writer``); jobs' outcomes are grouped the same
way on the pool (``bot.store.postgres_batch``). What SQLite gets from having one writer,
this store gets from locks held to the commit:

- the inbox is applied under one transaction-scoped advisory lock, so deliveries are
  folded into incidents one transaction at a time whichever replica received them, and a
  row another replica applied meanwhile is left alone (each alert state applied once);
- an incident's row is locked (``FOR UPDATE``) by whatever writes its timeline or jobs
  (``bot.store.postgres_incidents``);
- jobs are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease (``store.lease``), renewed
  while this replica runs them: a replica that dies holding jobs gives them up when
  their lease runs out, and only then (``release_running_jobs`` leaves live leases
  alone);
- rate windows are locked per bucket (``take_rate_slot``);
- work over several calls takes a named session lock (``hold``) on a connection of its
  own, which a dead replica's connection lets go of.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap
from psycopg.rows import DictRow, dict_row
from psycopg.types.string import StrBinaryDumper, StrDumperUnknown
from psycopg_pool import AsyncConnectionPool

from bot.core.alerts import AlertGroup
from bot.core.incidents import Event, Incident, IncidentBrief, Status, check_transition
from bot.errors import NotFound, StoreError, StoreUnavailable
from bot.settings import Severity
from bot.store import postgres_incidents as inc
from bot.store import postgres_queries as queries
from bot.store import rows as shared
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
from bot.store.inbox_child_pg import INSERT_PAYLOADS, payload_ids
from bot.store.inbox_writer import (
    InboxBatches,
    InboxRow,
    PostgresInboxWriter,
    WriterError,
    store_error,
)
from bot.store.postgres_batch import GroupCommit
from bot.store.postgres_schema import MIGRATIONS, migrate
from bot.store.rows import dumps

log = logging.getLogger(__name__)
T = TypeVar("T")
Conn = psycopg.AsyncConnection[DictRow]

INBOX_LOCK = 0x616C657274_02  # pg_advisory_xact_lock's key for applying the inbox
ANOTHER_REPLICA = "applied by another replica"
PRUNE_CHUNK = 2000
# Connections for held locks (``hold``): one per lock held at once, so about as many as
# jobs run at once (the lanes' slots, 28 by default); a holder waits this long for one.
LOCK_CONNECTIONS = 32
LOCK_WAIT = 60.0


class _TextDumper(StrDumperUnknown):
    """PostgreSQL's text holds no NUL character, and alert labels may (``\\u0000`` in
    JSON): it is stored as U+FFFD, where SQLite keeps it. Escaped inside JSON columns,
    it never gets here."""

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)


class _BinaryTextDumper(StrBinaryDumper):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)


ADAPTERS = AdaptersMap(psycopg.adapters)
ADAPTERS.register_dumper(str, _BinaryTextDumper)
ADAPTERS.register_dumper(str, _TextDumper)  # the last registered is the default


def display_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresStore(Store):
    backend = "postgresql"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        subscribers: Subscriptions | None = None,
        clock: Callable[[], float],
        lease: float = 30.0,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        inbox_writer: bool = True,
    ) -> None:
        self.url = url
        self._wants_writer = inbox_writer  # the CLI's commands take no webhooks
        self.subscribers = subscribers or Subscriptions()
        self.lease = lease
        self._clock = clock
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pool: AsyncConnectionPool[Conn] | None = None
        # Connections that hold a lock for a while (``hold``): apart, so that work
        # holding locks never waits for a connection that another holder keeps.
        self._lock_pool: AsyncConnectionPool[Conn] | None = None
        # Webhook payloads are committed by a child process with a connection of its
        # own (``bot.store.inbox_writer``): an ack waits neither for a connection that
        # the jobs keep busy nor for the jobs' turns of the event loop.
        self._writer: PostgresInboxWriter | None = None
        self._outcomes = GroupCommit(self._set_jobs)  # what became of the jobs that ran
        self._held: set[int] = set()  # jobs this replica runs: their leases are renewed
        self._renewer: asyncio.Task[None] | None = None
        self.inbox_signal = asyncio.Event()
        self.job_signal = asyncio.Event()
        self._inbox = InboxBatches(lambda: self._writer, self._no_writer, signal=self.inbox_signal)

    # plumbing ---------------------------------------------------------------
    def _connection_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,  # transactions are explicit (_tx)
            "row_factory": dict_row,
            "options": "-c synchronous_commit=on",
            "application_name": "alertpilot",
            "connect_timeout": max(1, round(self._connect_timeout)),
            "context": ADAPTERS,
        }

    async def _connect(self) -> Conn:
        """A connection of its own (migrating, checking), with a clear error if the
        database cannot be reached: where (without the password) and why."""
        try:
            return await psycopg.AsyncConnection.connect(self.url, **self._connection_kwargs())
        except psycopg.Error as exc:
            where = display_url(self.url)
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {where}: {_first_line(exc)}"
            ) from exc

    async def _tx(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction on a pooled connection: committed on
        success, rolled back on error. A lost or refused connection, a deadlock or a
        serialization failure is StoreUnavailable (try again later); any other database
        error is StoreError."""
        async with self._connection() as conn, conn.transaction():
            return await fn(conn, *args)

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[DictRow]:
        """One statement, its own transaction (autocommit: no BEGIN and COMMIT to send)."""
        async with self._connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchall()

    async def _fetch_bytes(self, query: bytes, params: Sequence[Any] = ()) -> list[DictRow]:
        """``_fetch`` for a query composed here (``postgres_incidents.select_incidents``)."""
        async with self._connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def _execute(self, query: str, params: Sequence[Any] = ()) -> int:
        """``_fetch`` for a statement whose row count is the answer."""
        async with self._connection() as conn:
            return max((await conn.execute(query.encode(), params)).rowcount, 0)

    @contextlib.asynccontextmanager
    async def _connection(
        self, pool: AsyncConnectionPool[Conn] | None = None
    ) -> AsyncIterator[Conn]:
        """A connection of ``pool`` (the store's), with psycopg's errors as the store's."""
        pool = pool or self._pool
        if pool is None:
            raise StoreUnavailable("store is closed")
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"store cannot commit: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"store error: {_first_line(exc)}") from exc

    async def open(self) -> None:
        """Connect once (a clear error if the database cannot be reached), migrate, then
        open the pool and start renewing the leases of the jobs this replica runs."""
        where = display_url(self.url)
        conn = await self._connect()
        try:
            await self.migrate_with(conn)
        finally:
            await conn.close()
        self._pool = AsyncConnectionPool(
            self.url,
            # All open from the start: a pool that grows under load makes the requests
            # that wait for a new connection wait for a server process to start.
            min_size=self._pool_size,
            max_size=self._pool_size,
            kwargs=self._connection_kwargs(),
            timeout=max(self._connect_timeout, 5.0),
            open=False,
            name="alertpilot",
        )
        self._lock_pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=LOCK_CONNECTIONS,
            timeout=LOCK_WAIT,
            kwargs=self._connection_kwargs(),
            open=False,
            name="alertpilot-locks",
        )
        try:
            for pool in (self._pool, self._lock_pool):
                await pool.open(wait=True, timeout=self._connect_timeout * 2)
        except psycopg.Error as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open a pool to {where}: {_first_line(exc)}") from exc
        if self._wants_writer:
            self._writer = PostgresInboxWriter(self.url, self._connect_timeout)
            try:
                await self._writer.start()
            except WriterError as exc:
                await self.close()
                raise StoreUnavailable(f"cannot start the inbox writer for {where}: {exc}") from exc
        self._renewer = asyncio.create_task(self._renew_leases(), name="store-leases")

    async def migrate_with(self, conn: Conn) -> list[int]:
        try:
            applied = await migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"migrating {display_url(self.url)}: {_first_line(exc)}") from exc
        if applied:
            log.info("store: PostgreSQL schema migrated to version %d", applied[-1])
        return applied

    async def migrate(self) -> list[int]:
        """``alertpilot migrate``: apply what is missing and return the steps applied."""
        conn = await self._connect()
        try:
            return await self.migrate_with(conn)
        finally:
            await conn.close()

    async def probe(self) -> str:
        """``alertpilot check``: connect, and say what is there (server version, schema
        version); StoreUnavailable if the database cannot be reached or is read-only."""
        conn = await self._connect()
        try:
            cur = await conn.execute(
                "SELECT current_setting('server_version') AS version,"
                " pg_is_in_recovery() AS standby,"
                " to_regclass('alertpilot_schema') IS NOT NULL AS migrated"
            )
            row = await cur.fetchone()
            assert row is not None
            if row["standby"]:
                raise StoreUnavailable(f"{display_url(self.url)} is a read-only standby")
            schema = 0
            if row["migrated"]:
                cur = await conn.execute(
                    "SELECT COALESCE(MAX(version), 0) AS v FROM alertpilot_schema"
                )
                found = await cur.fetchone()
                schema = int(found["v"]) if found is not None else 0
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{display_url(self.url)}: {_first_line(exc)}") from exc
        finally:
            await conn.close()
        return (
            f"PostgreSQL {row['version']} at {display_url(self.url)}, schema version"
            f" {schema} of {len(MIGRATIONS)}"
            + ("" if schema == len(MIGRATIONS) else " (migrated at start or by alertpilot migrate)")
        )

    async def close(self) -> None:
        await self._inbox.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        await self._outcomes.close()
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        for pool in (self._pool, self._lock_pool):
            if pool is not None:
                await pool.close()
        self._pool = self._lock_pool = None

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """A session advisory lock on a connection of its own, held for the block. A
        replica that dies holding one lets go with its connection.

        The connection holds this lock and no other, so letting go of all its locks is
        letting go of this one: one statement, where a named unlock and then the pool's
        reset took two. A connection that could not let go is closed, never given back
        holding the lock."""
        pool = self._lock_pool
        if pool is None:
            raise StoreUnavailable("store is closed")
        async with contextlib.AsyncExitStack() as stack:
            try:
                conn = await stack.enter_async_context(pool.connection())
                lock = conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 1))", (name,))
                await _or_close(conn, lock)
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"store cannot lock {name}: {_first_line(exc)}") from exc
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    await _or_close(conn, conn.execute("SELECT pg_advisory_unlock_all()"))

    async def _renew_leases(self) -> None:
        """Every third of a lease, push the leases of the jobs this replica runs forward:
        a job that runs longer than one lease is not taken over while it runs."""
        while True:
            await asyncio.sleep(self.lease / 3)
            if not self._held:
                continue
            try:
                await self._execute(
                    "UPDATE jobs SET lease_until = %s WHERE id = ANY(%s) AND status = 'running'",
                    (self._clock() + self.lease, sorted(self._held)),
                )
            except StoreError as exc:
                log.warning("store: renewing job leases failed: %s", exc)

    async def ping(self) -> None:
        """A write: a replica on a read-only standby, or cut off, is not ready; nor is
        one whose inbox writer cannot reach the database."""
        await self._execute(
            "INSERT INTO kv (key, value) VALUES ('ping', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(self._clock()),),
        )
        if self._writer is not None:
            try:
                await self._writer.ping()
            except WriterError as exc:
                raise store_error(exc) from exc.error

    # inbox ------------------------------------------------------------------
    def enqueue_payload(
        self, source: str, body: str, *, result: str | None = None
    ) -> asyncio.Future[int]:
        return self._inbox.add(source, body, self._clock(), result)

    @property
    def inbox_writer_pid(self) -> int | None:
        """The process committing webhook payloads (None for a command's store)."""
        return None if self._writer is None else self._writer.pid

    async def _no_writer(self, rows: list[InboxRow]) -> list[int]:
        """A command's store has no writer: one statement on a pooled connection."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        found = await self._fetch(INSERT_PAYLOADS, columns)
        return payload_ids(row["id"] for row in found)

    async def pending_payloads(
        self, limit: int, *, bodies_except: Container[int] = ()
    ) -> list[InboxItem]:
        async def read(conn: Conn) -> list[InboxItem]:
            cur = await conn.execute(
                "SELECT id, source, received_at FROM inbox WHERE processed_at IS NULL"
                " ORDER BY id LIMIT %s",
                (limit,),
            )
            rows = await cur.fetchall()
            missing = [row["id"] for row in rows if row["id"] not in bodies_except]
            bodies: dict[int, str] = {}
            if missing:
                cur = await conn.execute(
                    "SELECT id, body FROM inbox WHERE id = ANY(%s)", (missing,)
                )
                bodies = {row["id"]: row["body"] for row in await cur.fetchall()}
            return [
                InboxItem(r["id"], r["source"], bodies.get(r["id"], ""), r["received_at"])
                for r in rows
            ]

        return await self._tx(read)

    async def skip_payloads(self, inbox_ids: Sequence[int], result: str, now: float) -> None:
        await self._execute(
            "UPDATE inbox SET processed_at = %s, result = %s"
            " WHERE id = ANY(%s) AND processed_at IS NULL",
            (now, result, list(inbox_ids)),
        )

    async def apply_group(
        self, inbox_id: int, group: AlertGroup, severity: Severity, now: float
    ) -> ApplyResult:
        return (await self.apply_groups([(inbox_id, group, severity)], now))[0]

    async def apply_groups(
        self, items: Sequence[tuple[int, AlertGroup, Severity]], now: float
    ) -> list[ApplyResult]:
        async def apply(conn: Conn) -> list[ApplyResult]:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (INBOX_LOCK,))
            cur = await conn.execute(
                "SELECT id FROM inbox WHERE id = ANY(%s) AND processed_at IS NULL",
                ([inbox_id for inbox_id, _, _ in items],),
            )
            pending = {row["id"] for row in await cur.fetchall()}
            results = []
            for inbox_id, group, severity in items:
                if inbox_id not in pending:  # another replica applied it meanwhile
                    results.append(ApplyResult(None, duplicate=True, note=ANOTHER_REPLICA))
                    continue
                result = await inc.apply_group(conn, self.subscribers, group, severity, now)
                await _mark_processed(conn, inbox_id, now, shared.processed_result(result))
                results.append(result)
            return results

        results = await self._tx(apply)
        if any(result.events for result in results):
            self.job_signal.set()
        return results

    async def reject_payload(self, inbox_id: int, reason: str, now: float) -> None:
        await self._tx(_mark_processed, inbox_id, now, f"rejected: {reason}")

    # incidents --------------------------------------------------------------
    async def get_incident(self, incident_id: int, *, timeline: bool = True) -> Incident:
        query = inc.select_incidents("i.id = %s", timeline=timeline)
        rows = await self._fetch_bytes(query, (incident_id,))
        if not rows:
            raise NotFound(f"no incident #{incident_id}")
        return inc.incident_of(rows[0])

    async def find_incident(self, key: str) -> Incident | None:
        rows = await self._fetch_bytes(inc.select_incidents("i.key = %s", timeline=True), (key,))
        return inc.incident_of(rows[0]) if rows else None

    async def incident_briefs(self, ids: Sequence[int]) -> list[IncidentBrief]:
        if not ids:
            return []
        rows = await self._fetch(
            "SELECT id, status, severity, title FROM incidents WHERE id = ANY(%s)", (list(ids),)
        )
        found = {
            r["id"]: IncidentBrief(
                r["id"], Status(r["status"]), Severity(r["severity"]), r["title"]
            )
            for r in rows
        }
        return [found[i] for i in ids if i in found]

    async def list_incidents(
        self,
        *,
        status: Status | None = None,
        limit: int = 50,
        offset: int = 0,
        before: int | None = None,
    ) -> list[Incident]:
        wanted = None if status is None else status.value
        where = (
            "(%s::text IS NULL OR i.status = %s) AND (%s::bigint IS NULL OR i.id < %s)"
            " ORDER BY i.id DESC LIMIT %s OFFSET %s"
        )
        rows = await self._fetch_bytes(
            inc.select_incidents(where, timeline=False),
            (wanted, wanted, before, before, limit, offset),
        )
        return [inc.incident_of(row) for row in rows]

    async def search_incidents(self, query: IncidentQuery) -> list[Incident]:
        return await self._tx(queries.search_incidents, query)

    async def playbook_stats(self, *, since: float | None = None) -> list[PlaybookStats]:
        return await self._tx(queries.playbook_stats, since)

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
        async def change(conn: Conn) -> Incident:
            row = await inc.locked_incident(conn, incident_id)  # the check sees what it changes
            check_transition(Status(row["status"]), new)
            sets = shared.transition_fields(new, actor, now)
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(name)) for name in sets
            )
            await conn.execute(
                sql.SQL("UPDATE incidents SET {} WHERE id = %s").format(assignments),
                (*sets.values(), incident_id),
            )
            kind = shared.TRANSITION_EVENTS[new]
            await inc.add_event(
                conn, self.subscribers, incident_id, actor, kind, message, now, data, locked=True
            )
            return inc.incident_of(await inc.locked_incident(conn, incident_id, timeline=True))

        result = await self._tx(change)
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
        async def change(conn: Conn) -> Incident:
            row = await inc.locked_incident(conn, incident_id)  # the merge reads what it overwrites
            merged = shared.json_merge(row["data"], data or {})
            await conn.execute(
                "UPDATE incidents SET severity = %s, playbook = %s, data = %s, updated_at = %s"
                " WHERE id = %s",
                (
                    (severity or Severity(row["severity"])).value,
                    playbook if playbook is not None else row["playbook"],
                    merged,
                    now,
                    incident_id,
                ),
            )
            if severity is not None and severity.value != row["severity"]:
                await inc.reprioritise(conn, incident_id)
            return inc.incident_of(await inc.locked_incident(conn, incident_id))

        return await self._tx(change)

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
        event = await self._tx(
            inc.add_event, self.subscribers, incident_id, actor, kind, message, now, data, notify
        )
        if notify:
            self.job_signal.set()
        return event

    async def events(self, incident_id: int, *, after: int = 0) -> list[Event]:
        return await self._tx(inc.read_events, incident_id, after)

    async def change_incident(
        self, incident_id: int, change: Callable[[Incident], IncidentChange], *, now: float
    ) -> list[Event]:
        events = await self._tx(inc.change_incident, self.subscribers, incident_id, change, now)
        self.job_signal.set()
        return events

    async def decide(
        self, incident_id: int, decide: Callable[[Incident], Decided[T]], *, now: float
    ) -> T:
        async def run(conn: Conn) -> tuple[list[Event], T]:
            return await inc.decide_incident(conn, self.subscribers, incident_id, decide, now)

        _, result = await self._tx(run)
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
        row = (kind, key, incident_id, dumps(dict(payload or {})), due_at)
        added = await self._tx(inc.insert_jobs, self.subscribers, [row], now)
        if added:
            self.job_signal.set()
        return bool(added)

    async def claim_jobs(
        self, now: float, limit: int, kinds: Sequence[str], *, lane: str | None = None
    ) -> list[Job]:
        """``FOR UPDATE SKIP LOCKED``: replicas claiming at once take different jobs. A
        running job whose lease ran out (its replica died) is due again. Jobs of one kind
        for one incident still run one at a time, in order (see ``postgres_incidents``
        for why a smaller id never commits after a larger one)."""
        if not kinds:
            return []
        order = "due_at, id" if lane is None else "priority, due_at, id"
        query = (
            "SELECT * FROM jobs j WHERE ((status = 'pending' AND due_at <= %s)"  # noqa: S608
            " OR (status = 'running' AND lease_until < %s))"
            " AND kind = ANY(%s) AND (%s::text IS NULL OR lane = %s)"
            " AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.incident_id = j.incident_id"
            " AND e.kind = j.kind AND e.id < j.id AND e.status IN ('pending', 'running'))"
            f" ORDER BY {order} LIMIT %s FOR UPDATE SKIP LOCKED"
        )

        async def claim(conn: Conn) -> list[DictRow]:
            cur = await conn.execute(query.encode(), (now, now, list(kinds), lane, lane, limit))
            rows = await cur.fetchall()
            if rows:
                await conn.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
                    " updated_at = %s, lease_until = %s WHERE id = ANY(%s)",
                    (now, now + self.lease, [r["id"] for r in rows]),
                )
            return rows

        jobs = [shared.job_from_row(r) for r in await self._tx(claim)]
        self._held.update(job.id for job in jobs)
        return jobs

    async def _set_job(
        self, job_id: int, status: str, due_at: float | None, error: str | None, now: float
    ) -> None:
        """Record a job's outcome, in one statement with the outcomes of the jobs that
        end meanwhile (group commit, as for the inbox: most jobs end within milliseconds
        of each other); it returns once its own is committed."""
        self._held.discard(job_id)
        await self._outcomes.add((job_id, status, due_at, error, now))

    async def _set_jobs(self, outcomes: Sequence[JobOutcome]) -> list[None]:
        columns = [list(column) for column in zip(*outcomes, strict=True)]
        await self._execute(_SET_JOBS, columns)
        return [None] * len(outcomes)

    async def finish_job(self, job_id: int, now: float) -> None:
        await self._set_job(job_id, "done", None, None, now)

    async def retry_job(self, job_id: int, due_at: float, error: str, now: float) -> None:
        await self._set_job(job_id, "pending", due_at, error, now)

    async def defer_job(self, job_id: int, due_at: float, reason: str, now: float) -> None:
        self._held.discard(job_id)
        await self._execute(
            "UPDATE jobs SET status = 'pending', due_at = %s, attempts = GREATEST(attempts - 1, 0),"
            " last_error = %s, updated_at = %s, lease_until = NULL WHERE id = %s",
            (due_at, reason, now, job_id),
        )

    async def fail_job(self, job_id: int, error: str, now: float) -> None:
        await self._set_job(job_id, "failed", None, error, now)

    async def next_job_due(self, kinds: Sequence[str]) -> float | None:
        """The next pending job's time, or the next lease to run out (a job to take over)."""
        if not kinds:
            return None
        rows = await self._fetch(
            "SELECT LEAST((SELECT MIN(due_at) FROM jobs WHERE status = 'pending'"
            " AND kind = ANY(%s)), (SELECT MIN(lease_until) FROM jobs WHERE status = 'running'"
            " AND kind = ANY(%s))) AS due",
            (list(kinds), list(kinds)),
        )
        due = rows[0]["due"]
        return None if due is None else float(due)

    async def release_running_jobs(self) -> int:
        """At start: jobs whose lease ran out run again now. Jobs running on live replicas
        (their lease still current) are theirs; a job this replica held before it
        restarted is taken over once its lease runs out, like any other."""
        return await self._execute(
            "UPDATE jobs SET status = 'pending', lease_until = NULL"
            " WHERE status = 'running' AND lease_until < %s",
            (self._clock(),),
        )

    async def route_jobs(self) -> int:
        lanes = self.subscribers.lanes
        if not lanes:
            return 0
        return await self._execute(
            "UPDATE jobs SET lane = t.lane FROM unnest(%s::text[], %s::text[]) AS t(kind, lane)"
            " WHERE jobs.kind = t.kind AND jobs.lane != t.lane"
            " AND jobs.status IN ('pending', 'running')",
            (list(lanes), list(lanes.values())),
        )

    # key-value ---------------------------------------------------------------
    async def kv_get(self, key: str, now: float) -> str | None:
        rows = await self._fetch(
            "SELECT value FROM kv WHERE key = %s AND (expires_at IS NULL OR expires_at > %s)",
            (key, now),
        )
        return None if not rows else str(rows[0]["value"])

    async def kv_set(self, key: str, value: str, *, now: float, ttl: float | None = None) -> None:
        await self._execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (%s, %s, %s) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            (key, value, None if ttl is None else now + ttl),
        )

    async def take_rate_slot(self, limits: Sequence[RateLimit], *, now: float) -> RateLimit | None:
        return await self._tx(inc.take_rate_slot, limits, now)

    async def rate_entries(self, bucket: str, *, since: float, now: float) -> list[float]:
        return await self._tx(inc.rate_entries, bucket, since, now)

    # events seen ---------------------------------------------------------------
    async def seen_event(self, source: str, event_id: str) -> str | None:
        rows = await self._fetch(
            "SELECT result FROM seen_events WHERE source = %s AND id = %s", (source, event_id)
        )
        return None if not rows else str(rows[0]["result"])

    async def remember_event(self, source: str, event_id: str, result: str, *, at: float) -> None:
        await self._execute(
            "INSERT INTO seen_events (source, id, at, result) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (source, event_id, at, result),
        )

    async def forget_events(self, source: str, *, before: float) -> int:
        return await self._execute(
            "DELETE FROM seen_events WHERE source = %s AND at < %s", (source, before)
        )

    # upkeep -------------------------------------------------------------------
    async def stats(self) -> Stats:
        now, timers = self._clock(), sorted(self.subscribers.timers)

        async def read(conn: Conn) -> Stats:
            cur = await conn.execute(
                "SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM inbox"
                " WHERE processed_at IS NULL"
            )
            inbox = await cur.fetchone()
            assert inbox is not None
            # A timer waiting for its time; once tried, a retry is backlog like any job.
            timer = "(kind = ANY(%s) AND status = 'pending' AND due_at > %s AND attempts = 0)"
            counts = (
                "SELECT COUNT(*) FILTER (WHERE status IN ('pending', 'running')"  # noqa: S608
                f" AND NOT {timer}) AS pending, COUNT(*) FILTER (WHERE {timer}) AS scheduled,"
                " COUNT(*) FILTER (WHERE status = 'failed') AS failed FROM jobs"
            )
            cur = await conn.execute(
                counts.encode(),
                (timers, now, timers, now),
            )
            jobs = await cur.fetchone()
            assert jobs is not None
            cur = await conn.execute(
                "SELECT severity, COUNT(*) AS n FROM incidents WHERE status != 'resolved'"
                " GROUP BY severity"
            )
            by_severity = {row["severity"]: int(row["n"]) for row in await cur.fetchall()}
            return Stats(
                int(inbox["n"]),
                inbox["oldest"],
                int(jobs["pending"]),
                int(jobs["failed"]),
                by_severity,
                int(jobs["scheduled"]),
            )

        return await self._tx(read)

    async def prune(self, before: float) -> int:
        """The processed inbox rows a chunk per transaction (webhooks commit meanwhile),
        then finished and cancelled jobs and expired keys."""
        gone = 0
        while True:
            chunk = await self._execute(
                "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox"
                " WHERE processed_at < %s ORDER BY id LIMIT %s)",
                (before, PRUNE_CHUNK),
            )
            gone += chunk
            if chunk < PRUNE_CHUNK:
                break
        gone += await self._execute(
            "DELETE FROM jobs WHERE status IN ('done', 'cancelled') AND updated_at < %s",
            (before,),
        )
        gone += await self._execute(
            "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at < %s", (before,)
        )
        return gone


JobOutcome = tuple[int, str, float | None, str | None, float]  # id, status, due, error, now

# Arrays go in binary (``%b``): in text, every quote and backslash of every JSON body is
# escaped by a regular expression, which cost more than all the rest of the ack. The
# Each outcome: (job id, status, due_at or None to keep it, last_error, now).
_SET_JOBS = (
    "UPDATE jobs SET status = u.status, due_at = COALESCE(u.due_at, jobs.due_at),"
    " last_error = u.error, updated_at = u.now, lease_until = NULL"
    " FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::text[], %b::float8[])"
    " AS u(id, status, due_at, error, now) WHERE jobs.id = u.id"
)


async def _or_close(conn: Conn, statement: Awaitable[Any]) -> None:
    """Await a lock's statement; if it fails or is cancelled the connection may hold the
    lock anyway (granted as the cancel came): close it, so the pool drops it, and raise."""
    try:
        await statement
    except BaseException:
        await conn.close()
        raise


async def _mark_processed(conn: Conn, inbox_id: int, now: float, result: str) -> None:
    await conn.execute(
        "UPDATE inbox SET processed_at = %s, result = %s WHERE id = %s", (now, result, inbox_id)
    )
