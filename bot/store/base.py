"""The store's interface, by role. ``SqliteStore`` (one process) and ``PostgresStore``
(several replicas) implement it, and ``tests/test_store_contract.py`` holds both to it.

Everything that must happen together happens in one store call, in one transaction:
applying an alert group (incident, alerts, timeline, the jobs it starts, the inbox row
marked done), a status change with its event, an event with the jobs of its subscribers.
Jobs are the outbox: every side effect is a job with a unique key, so a repeat is a no-op.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from bot.core.alerts import AlertGroup
from bot.core.incidents import Event, Incident, IncidentBrief, Status
from bot.settings import Severity


class Subscriptions:
    """Which subscriber job kinds get a job for a timeline event of a given kind, and the
    lane each job kind runs in (``bot.runtime.jobs.Lane``): the store files every job it writes
    under its lane, so that each lane's claim reads only its own jobs."""

    DEFAULT_LANE = "pipeline"

    def __init__(self) -> None:
        self._entries: list[tuple[str, frozenset[str] | None]] = []
        self._lanes: dict[str, str] = {}
        self._timers: set[str] = set()

    def add(self, subscriber: str, events: Iterable[str] | None = None) -> None:
        self._entries.append((subscriber, None if events is None else frozenset(events)))

    def route(self, kind: str, lane: str) -> None:
        self._lanes[kind] = lane

    def timer(self, kind: str) -> None:
        """Jobs of ``kind`` are timers (an escalation, a reminder, a response target): due
        later, they are not counted as the outbox's backlog (``Stats.jobs_scheduled``)."""
        self._timers.add(kind)

    @property
    def timers(self) -> frozenset[str]:
        return frozenset(self._timers)

    def lane_of(self, kind: str) -> str:
        return self._lanes.get(kind, self.DEFAULT_LANE)

    @property
    def lanes(self) -> Mapping[str, str]:
        return dict(self._lanes)

    def for_event(self, kind: str) -> list[str]:
        return [name for name, wanted in self._entries if wanted is None or kind in wanted]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._entries)


@dataclass(frozen=True)
class InboxItem:
    id: int
    source: str
    body: str
    received_at: float


@dataclass(frozen=True)
class ApplyResult:
    incident_id: int | None
    created: bool = False
    duplicate: bool = False
    events: tuple[int, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    incident_id: int | None
    payload: Mapping[str, Any]
    attempts: int
    due_at: float


@dataclass(frozen=True)
class NewEvent:
    """A timeline event to record as part of an incident change; with ``notify`` (the
    default) every subscriber gets a job for it, as with ``Store.append_event``."""

    actor: str
    kind: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    notify: bool = True


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue (unless its ``key`` exists) as part of an incident change.

    ``attach`` ties it to the incident: it then runs after earlier jobs of its kind for
    that incident, and a final failure is recorded on the timeline. Timers that must not
    hold up other jobs of their kind leave it off.
    """

    kind: str
    key: str
    due_at: float
    payload: Mapping[str, Any] = field(default_factory=dict)
    attach: bool = True


@dataclass(frozen=True)
class IncidentChange:
    """What ``Store.change_incident`` writes: top-level ``data`` keys replaced, events, jobs,
    and the incident's ``severity`` and ``playbook`` when set (None leaves them as they are).

    ``cancel`` names timers that are no longer wanted, as key prefixes: every pending job
    whose key starts with one is marked ``cancelled`` in the same transaction, so it never
    runs (a running one finishes; its handler finds the state that cancelled it)."""

    data: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[NewEvent] = ()
    jobs: Sequence[NewJob] = ()
    cancel: Sequence[str] = ()
    severity: Severity | None = None
    playbook: str | None = None


T = TypeVar("T")


@dataclass(frozen=True)
class Decided(Generic[T]):
    """What ``Store.decide`` writes (``change``) and what the caller gets back (``result``):
    a decision taken on the incident as it is inside the transaction, such as which steps
    were planned or what became of an approval."""

    change: IncidentChange
    result: T


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` entries in ``bucket`` within the last ``window`` seconds."""

    bucket: str
    limit: int
    window: float


@dataclass(frozen=True)
class IncidentQuery:
    """Which incidents a list shows (the console's filters), newest first.

    ``service``: the group's ``service`` label (common labels); ``since``/``until``: when
    it opened; ``text``: case-insensitive, in the title or in any label name or value of
    the group or of its alerts."""

    status: Status | None = None
    severity: Severity | None = None
    service: str | None = None
    since: float | None = None
    until: float | None = None
    text: str = ""
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class PlaybookStats:
    """What became of the incidents a playbook matched (``data["pipeline"]["playbooks"]``)
    that opened in a window: how many, how many acknowledged and resolved and how long
    that took on average (seconds from opening), and its remediation steps: how many ran
    (a result is recorded), were verified, failed, and were rolled back."""

    playbook: str
    matched: int = 0
    acknowledged: int = 0
    mean_ack: float | None = None
    resolved: int = 0
    mean_resolve: float | None = None
    ran: int = 0
    verified: int = 0
    failed: int = 0
    rolled_back: int = 0


@dataclass(frozen=True)
class Stats:
    """``jobs_pending``: the outbox, jobs running or waiting to run (a retry waiting out
    its backoff included); ``jobs_scheduled``: timers (kinds registered with
    ``timer=True``: an escalation, a reminder, a response target) due later and not tried
    yet, which are no backlog."""

    inbox_depth: int
    oldest_pending_at: float | None
    jobs_pending: int
    jobs_failed: int
    open_by_severity: Mapping[str, int] = field(default_factory=dict)
    jobs_scheduled: int = 0


class InboxStore(abc.ABC):
    """Webhook payloads as received, committed before the ack, and applied to incidents."""

    @abc.abstractmethod
    def enqueue_payload(
        self, source: str, body: str, *, result: str | None = None
    ) -> Awaitable[int]:
        """Commit a received payload durably: its inbox id, once committed. With
        ``result`` the row is stored as already processed with that outcome (a repeat
        known to change nothing). It is sent on its way when called, not when awaited."""

    @abc.abstractmethod
    async def pending_payloads(
        self, limit: int, *, bodies_except: Container[int] = ()
    ) -> list[InboxItem]:
        """Unprocessed payloads in arrival order; rows in ``bodies_except`` (their body
        is already in hand) come back with an empty body."""

    @abc.abstractmethod
    async def skip_payloads(self, inbox_ids: Sequence[int], result: str, now: float) -> None:
        """Mark rows processed without applying them (known repeats)."""

    @abc.abstractmethod
    async def apply_group(
        self, inbox_id: int, group: AlertGroup, severity: Severity, now: float
    ) -> ApplyResult:
        """Apply an alert group to its incident and mark the inbox row done, atomically."""

    @abc.abstractmethod
    async def apply_groups(
        self, items: Sequence[tuple[int, AlertGroup, Severity]], now: float
    ) -> list[ApplyResult]:
        """``apply_group`` for several inbox rows, in order, in one transaction."""

    @abc.abstractmethod
    async def reject_payload(self, inbox_id: int, reason: str, now: float) -> None: ...


class IncidentStore(abc.ABC):
    """Incidents, their alerts and timelines; every change writes its events and jobs in
    the same transaction."""

    @abc.abstractmethod
    async def get_incident(self, incident_id: int, *, timeline: bool = True) -> Incident:
        """Raise NotFound if there is no such incident."""

    @abc.abstractmethod
    async def find_incident(self, key: str) -> Incident | None: ...

    @abc.abstractmethod
    async def incident_briefs(self, ids: Sequence[int]) -> list[IncidentBrief]:
        """The incidents ``ids`` in that order, a few columns of each; unknown ids are
        left out."""

    @abc.abstractmethod
    async def list_incidents(
        self,
        *,
        status: Status | None = None,
        limit: int = 50,
        offset: int = 0,
        before: int | None = None,
    ) -> list[Incident]:
        """Newest first; ``before``: only incidents with a lower id (a page after the
        last one read, steady while new incidents open)."""

    @abc.abstractmethod
    async def search_incidents(self, query: IncidentQuery) -> list[Incident]:
        """The incidents ``query`` selects, newest first, without their timelines."""

    @abc.abstractmethod
    async def playbook_stats(self, *, since: float | None = None) -> list[PlaybookStats]:
        """Per playbook, its incidents opened at or after ``since`` (all with None), by
        playbook name; a playbook that matched none is left out."""

    @abc.abstractmethod
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
        """Change status (checked against the state machine) and record the event."""

    @abc.abstractmethod
    async def update_incident(
        self,
        incident_id: int,
        *,
        now: float,
        severity: Severity | None = None,
        playbook: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Incident:
        """Set fields; ``data`` is merged into the incident's feature data, key by key."""

    @abc.abstractmethod
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
        """Add to the timeline; with ``notify`` every subscriber gets a job for it."""

    @abc.abstractmethod
    async def events(self, incident_id: int, *, after: int = 0) -> list[Event]: ...

    @abc.abstractmethod
    async def change_incident(
        self, incident_id: int, change: Callable[[Incident], IncidentChange], *, now: float
    ) -> list[Event]:
        """Read the incident (no timeline) and write ``change(incident)`` in one transaction.

        The change's ``data`` keys replace the incident's, its events are appended (every
        subscriber gets a job for each with ``notify``) and its jobs enqueued. ``change``
        runs inside the transaction, so it sees no concurrent write: keep it pure and quick.
        If it raises, nothing is written and the exception propagates. Raise NotFound for
        no incident.
        """

    @abc.abstractmethod
    async def decide(
        self, incident_id: int, decide: Callable[[Incident], Decided[T]], *, now: float
    ) -> T:
        """``change_incident`` for a change that also decides something the caller needs:
        ``decide`` returns the change and that result, which is returned once written."""


class JobStore(abc.ABC):
    """The jobs table: the outbox of every notification and every timer, claimed by lane."""

    @abc.abstractmethod
    async def enqueue_job(
        self,
        kind: str,
        key: str,
        *,
        due_at: float,
        incident_id: int | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> bool:
        """Add a job unless one with ``key`` exists; return whether it was added."""

    @abc.abstractmethod
    async def claim_jobs(
        self, now: float, limit: int, kinds: Sequence[str], *, lane: str | None = None
    ) -> list[Job]:
        """Mark up to ``limit`` due jobs of ``kinds`` running and return them, the oldest
        first; with ``lane``, only that lane's jobs, the most severe incidents' first. A
        job waits while an earlier job of its kind for its incident is pending or running.
        On a store replicas share, a claimed job is this process's for a lease (renewed
        while it runs); a running job whose lease ran out can be claimed again."""

    @abc.abstractmethod
    async def route_jobs(self) -> int:
        """File waiting jobs under the lane their kind runs in now (a job written before
        lanes, or before a kind moved lane); return how many moved."""

    @abc.abstractmethod
    async def finish_job(self, job_id: int, now: float) -> None: ...

    @abc.abstractmethod
    async def retry_job(self, job_id: int, due_at: float, error: str, now: float) -> None: ...

    @abc.abstractmethod
    async def defer_job(self, job_id: int, due_at: float, reason: str, now: float) -> None:
        """Run the job again at ``due_at`` without counting this run as an attempt."""

    @abc.abstractmethod
    async def fail_job(self, job_id: int, error: str, now: float) -> None: ...

    @abc.abstractmethod
    async def next_job_due(self, kinds: Sequence[str]) -> float | None: ...

    @abc.abstractmethod
    async def release_running_jobs(self) -> int:
        """After a restart: jobs that were running when the process died run again. On a
        store replicas share, only jobs whose lease ran out: the others are running on a
        live replica (a job this one held runs again once its lease runs out)."""


class SharedState(abc.ABC):
    """Small state every worker shares: caches, counters, rate windows, and the ids of
    events received from outside (each applied once)."""

    @abc.abstractmethod
    async def kv_get(self, key: str, now: float) -> str | None: ...

    @abc.abstractmethod
    async def kv_set(
        self, key: str, value: str, *, now: float, ttl: float | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def take_rate_slot(self, limits: Sequence[RateLimit], *, now: float) -> RateLimit | None:
        """Atomically: when every limit has room, record one entry in each bucket and return
        None; otherwise record nothing and return the first limit that is full."""

    @abc.abstractmethod
    async def rate_entries(self, bucket: str, *, since: float, now: float) -> list[float]:
        """Times of the entries in ``bucket`` after ``since``, oldest first (read only)."""

    @abc.abstractmethod
    async def seen_event(self, source: str, event_id: str) -> str | None:
        """What came of the event ``event_id`` from ``source``, if it is remembered."""

    @abc.abstractmethod
    async def remember_event(self, source: str, event_id: str, result: str, *, at: float) -> None:
        """Remember the event with what came of it, counted from ``at`` (kept if already
        remembered)."""

    @abc.abstractmethod
    async def forget_events(self, source: str, *, before: float) -> int:
        """Forget the events of ``source`` counted from before ``before``; return how many.
        ``prune`` leaves them alone: each source keeps its ids as long as it needs them."""


class Store(InboxStore, IncidentStore, JobStore, SharedState):
    """Async persistence for alertpilot, by role (inbox, incidents, jobs, shared state),
    plus its lifetime and upkeep. Raise StoreUnavailable when a commit is impossible.

    ``inbox_signal`` and ``job_signal`` are set when this process commits a payload to
    process or a job to run (the workers wake at once; what another replica commits is
    found by polling). ``backend`` names the kind of store (``/readyz`` says it)."""

    backend: ClassVar[str]
    # Other processes (replicas) use this store too: limits kept in memory must also be
    # taken from the store (``bot.runtime.shared_limits``).
    shared: ClassVar[bool] = False
    subscribers: Subscriptions
    inbox_signal: asyncio.Event
    job_signal: asyncio.Event

    def hold(self, name: str) -> AbstractAsyncContextManager[None]:
        """A lock named ``name`` across every process that shares this store, held for
        the ``async with`` block: work that reads, decides and writes over several store
        calls (one incident's pipeline, a storm's roll-up) runs in one replica at a time.
        Callers hold their own in-process lock first (``bot.runtime.locks``). The
        default holds nothing more: one process uses a SQLite store."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Prove the store is writable; raise StoreUnavailable if not."""

    @abc.abstractmethod
    async def stats(self) -> Stats: ...

    @abc.abstractmethod
    async def prune(self, before: float) -> int:
        """Delete processed inbox rows, finished and cancelled jobs and expired keys older
        than ``before``."""
