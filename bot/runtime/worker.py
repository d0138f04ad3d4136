"""Background work after the ack: the inbox processor and the job runner.

The inbox processor folds stored webhook payloads into incidents, in arrival order,
one transaction each; what it leaves unprocessed at a crash is processed on restart.
The job runner runs due jobs (notifier calls, pipeline runs, timers) with bounded
retries and backoff, each in its kind's lane (``bot.runtime.jobs.Lane``) with the lane's own
slots, so that a lane waiting on a hung upstream never holds up another; on shutdown
both stop taking work and finish what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict

from bot.core.alerts import Alert, AlertGroup, parse_group
from bot.core.clock import Clock
from bot.core.incidents import EventKind, severity_of
from bot.errors import PayloadError, PermanentFailure, RetryLater, StoreError, StoreUnavailable
from bot.runtime.jobs import JobHandlers, Lane
from bot.runtime.load import IngestLoad
from bot.runtime.loop import background
from bot.runtime.metrics import Metrics
from bot.settings import IncidentSettings, LaneSettings, Severity, WorkerSettings
from bot.store.base import ApplyResult, InboxItem, Job, Store

log = logging.getLogger(__name__)

# Parsed groups kept for the processor: a few batches' worth. Beyond it (a flood the
# processor is behind on) it parses the stored body again, which is cheap, rather than
# holding thousands of parsed groups in memory.
HANDOVER_LIMIT = 1_000
# Payloads a batch takes while webhooks flood in (bot/runtime/load.py), and jobs each lane starts
# at a time: small steps, so the acks keep the CPU.
FLOOD_BATCH = 20
FLOOD_JOBS = 2


def _group(group: AlertGroup) -> int:
    return hash((group.receiver, group.groupKey))


def _state(alert: Alert) -> int:
    """An alert state (``Alert.state_key``, without formatting the time) as a 64-bit
    hash: this runs on every delivery, and what is kept is an int, not three objects."""
    return hash((alert.fingerprint, alert.status, alert.startsAt))


class SeenStates:
    """Alert states already applied, for recent groups (bounded, least recent dropped).

    Only states the store has committed go in, and the store never forgets one, so a
    payload whose every state is here would change nothing: it can be marked a repeat
    without a transaction. Alertmanager resends (HA pairs, repeat_interval) are mostly that.

    Groups and states are kept as 64-bit hashes: small, and few objects that live long
    among the short-lived ones of a flood (each pins the allocator's memory around it).
    Two different states with one hash would make the second look like a repeat; at 2^-64
    per comparison that is not a practical risk.
    """

    def __init__(self, groups: int = 2000) -> None:
        self._groups: OrderedDict[int, frozenset[int]] = OrderedDict()
        self._limit = groups

    def known(self, group: AlertGroup) -> bool:
        seen = self._groups.get(_group(group))
        return seen is not None and all(_state(alert) in seen for alert in group.alerts)

    def add(self, group: AlertGroup) -> None:
        key = _group(group)
        states = frozenset(_state(alert) for alert in group.alerts)
        seen = self._groups.get(key)
        self._groups[key] = states if seen is None or seen <= states else seen | states
        self._groups.move_to_end(key)
        while len(self._groups) > self._limit:
            self._groups.popitem(last=False)


class InboxProcessor:
    def __init__(
        self,
        store: Store,
        signal: asyncio.Event,
        incidents: IncidentSettings,
        metrics: Metrics,
        clock: Clock,
        poll_interval: float,
        *,
        load: IngestLoad | None = None,
    ) -> None:
        self.store = store
        self.load = load
        self.signal = signal
        self.incidents = incidents
        self.metrics = metrics
        self.clock = clock
        self.poll_interval = poll_interval
        self.batch_size = 200
        self._parsed: dict[int, AlertGroup] = {}  # handed over by ingest, saves a re-parse
        self._seen = SeenStates()
        self._done_upto = 0
        self._stopping = False
        self._lock = asyncio.Lock()  # one drain at a time: payloads apply in arrival order
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = background(self._loop(), name="alertpilot-inbox")

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def known(self, group: AlertGroup) -> bool:
        """Every alert state of ``group`` is already applied: storing it changes nothing,
        so ingest stores it as a processed repeat and nothing reads it back."""
        return self._seen.known(group)

    def remember(self, inbox_id: int, group: AlertGroup) -> None:
        """Keep the group ingest already parsed for this committed row (bounded)."""
        if inbox_id > self._done_upto and len(self._parsed) < HANDOVER_LIMIT:
            self._parsed[inbox_id] = group

    async def stop(self) -> None:
        self._stopping = True
        self.signal.set()
        if self.task is not None:
            await self.task

    async def drain(self) -> int:
        """Process everything pending now; return how many payloads were handled."""
        async with self._lock:
            return await self._drain()

    async def _drain(self) -> int:
        handled = 0
        while not self._stopping:
            size = self.batch_size
            if self.load is not None:  # in a flood of webhooks, the acks come first
                await self.load.lull()
                size = FLOOD_BATCH if self.load.flooding else size
            batch = await self.store.pending_payloads(size, bodies_except=self._parsed.keys())
            if not batch:
                break
            await self._process(batch)
            handled += len(batch)
        return handled

    async def _process(self, batch: list[InboxItem]) -> None:
        """Apply a batch of payloads in arrival order, in one transaction."""
        now = self.clock.now()
        parsed: list[tuple[InboxItem, AlertGroup]] = []
        for item in batch:
            try:
                group = self._parsed.pop(item.id, None)
                parsed.append((item, group or parse_group(item.body)))
            except PayloadError as exc:  # validated before it was stored; only a bug lands here
                log.error("inbox #%d: stored payload no longer parses: %s", item.id, exc)
                await self.store.reject_payload(item.id, str(exc), now)
        repeats = [item.id for item, group in parsed if self._seen.known(group)]
        if repeats:  # every alert state already applied: nothing to do but say so
            await self.store.skip_payloads(repeats, "duplicate", now)
            self.metrics.duplicates.inc(len(repeats))
            skipped = set(repeats)
            parsed = [(item, group) for item, group in parsed if item.id not in skipped]
        items = [(item.id, group, severity_of(group, self.incidents)) for item, group in parsed]
        results: list[ApplyResult | None]
        try:
            results = list(await self.store.apply_groups(items, now))
        except StoreUnavailable:
            raise
        except Exception:  # one payload trips a bug: apply the rest one by one
            log.exception("inbox: a batch of %d failed; applying one by one", len(items))
            results = await self._one_by_one(items, now)
        self._done_upto = max(self._done_upto, batch[-1].id)
        for inbox_id in [i for i in self._parsed if i <= self._done_upto]:
            del self._parsed[inbox_id]  # handed over after its row was taken: never used
        for (item, group), result in zip(parsed, results, strict=True):
            if result is None:
                continue
            self._seen.add(group)
            self.metrics.processing_lag.observe(max(0.0, now - item.received_at))
            if result.duplicate:
                self.metrics.duplicates.inc()
            log.debug(
                "inbox #%d: %s -> incident %s%s",
                item.id,
                group.groupKey,
                result.incident_id,
                " (new)" if result.created else (" (repeat)" if result.duplicate else ""),
            )

    async def _one_by_one(
        self, items: list[tuple[int, AlertGroup, Severity]], now: float
    ) -> list[ApplyResult | None]:
        """Apply each payload alone; one that still fails is rejected, with the reason kept
        on its inbox row, so it cannot block the payloads behind it."""
        results: list[ApplyResult | None] = []
        for item in items:
            try:
                [result] = await self.store.apply_groups([item], now)
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.exception("inbox #%d: cannot be applied; rejected", item[0])
                self.metrics.store_errors.labels("inbox").inc()
                await self.store.reject_payload(item[0], f"{type(exc).__name__}: {exc}", now)
                results.append(None)
            else:
                results.append(result)
        return results

    async def _loop(self) -> None:
        while not self._stopping:
            self.signal.clear()
            try:
                await self.drain()
            except StoreError as exc:
                self.metrics.store_errors.labels("inbox").inc()
                log.warning("inbox: store unavailable, will retry: %s", exc)
            except Exception:  # the loop must outlive any bug; /readyz watches it
                log.exception("inbox: processing failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.signal.wait(), self.poll_interval)


class LaneSlots:
    """One lane's running jobs and its limit."""

    def __init__(self, lane: Lane, limit: int) -> None:
        self.lane = lane
        self.limit = limit
        self.running: set[asyncio.Task[None]] = set()

    @property
    def free(self) -> int:
        return self.limit - len(self.running)


def lane_limits(settings: LaneSettings) -> dict[Lane, int]:
    return {lane: int(getattr(settings, lane.value)) for lane in Lane}


class JobRunner:
    def __init__(
        self,
        store: Store,
        signal: asyncio.Event,
        handlers: JobHandlers,
        settings: WorkerSettings,
        metrics: Metrics,
        clock: Clock,
        *,
        load: IngestLoad | None = None,
    ) -> None:
        self.store = store
        self.load = load
        self.signal = signal
        self.handlers = handlers
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._stopping = False
        self._running: set[asyncio.Task[None]] = set()
        self._lanes = {
            lane: LaneSlots(lane, limit) for lane, limit in lane_limits(settings.lanes).items()
        }
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = background(self._loop(), name="alertpilot-jobs")

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        """Stop claiming; give running jobs ``drain_timeout`` to finish, then cancel them."""
        self._stopping = True
        self.signal.set()
        if self.task is not None:
            await self.task
        if self._running:
            _, late = await asyncio.wait(self._running, timeout=self.settings.drain_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    @property
    def busy(self) -> int:
        """How many jobs the background loop is running right now."""
        return len(self._running)

    async def run_due(self) -> int:
        """Claim and run due jobs until none is due; return how many ran. For tests and the CLI.

        Jobs the background loop has already claimed are waited for too, so that on return
        no job that was due is still half-way through.
        """
        count = 0
        while True:
            if self._running:
                await asyncio.wait(set(self._running))
            jobs = await self.store.claim_jobs(self.clock.now(), 50, self.handlers.kinds)
            if not jobs and not self._running:
                return count
            for job in jobs:
                await self._run(job)
                count += 1

    async def _loop(self) -> None:
        while not self._stopping:
            self.signal.clear()
            try:
                await self._dispatch_due()
                due = await self.store.next_job_due(self.handlers.kinds)
            except StoreError as exc:
                self.metrics.store_errors.labels("jobs").inc()
                log.warning("jobs: store unavailable, will retry: %s", exc)
                due = None
            except Exception:  # the loop must outlive any bug; /readyz watches it
                log.exception("jobs: dispatch failed; retrying")
                due = None
            wait = self.settings.poll_interval
            if due is not None:
                wait = min(wait, max(0.0, due - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.signal.wait(), wait)

    async def _dispatch_due(self) -> None:
        """Fill each lane's free slots with its due jobs, the most severe incidents' first
        (a few at a time while webhooks flood in: the acks come first)."""
        flooding = False
        if self.load is not None:
            await self.load.lull()
            flooding = self.load.flooding
        for slots in self._lanes.values():
            free = min(slots.free, FLOOD_JOBS) if flooding else slots.free
            kinds = self.handlers.kinds_in(slots.lane)
            if free <= 0 or not kinds:
                continue
            jobs = await self.store.claim_jobs(self.clock.now(), free, kinds, lane=slots.lane.value)
            for job in jobs:
                task = asyncio.create_task(self._run_slot(job), name=f"job-{job.kind}-{job.id}")
                for running in (self._running, slots.running):
                    running.add(task)
                    task.add_done_callback(running.discard)
            self.metrics.lane_busy.labels(slots.lane.value).set(len(slots.running))

    def lane_busy(self, lane: Lane) -> int:
        """How many jobs of ``lane`` the background loop is running right now."""
        return len(self._lanes[lane].running)

    async def _run_slot(self, job: Job) -> None:
        try:
            await self._run(job)
        except StoreError as exc:
            await self._release(job, exc)
        finally:
            self.signal.set()

    async def _release(self, job: Job, exc: StoreError) -> None:
        """The job's outcome could not be written (the store is locked or full). Like a
        crash: once the store commits again, the job is due again (handlers are
        idempotent). Until then it stays claimed, so nothing else runs it; a shutdown
        meanwhile leaves it to the next start, which releases it."""
        self.metrics.store_errors.labels("jobs").inc()
        log.warning(
            "job %s #%d: outcome not recorded, it runs again once the store commits: %s",
            job.kind,
            job.id,
            exc,
        )
        while not self._stopping:
            await asyncio.sleep(self.settings.poll_interval)
            now = self.clock.now()
            try:
                await self.store.retry_job(job.id, now, f"store: {exc}", now)
            except StoreError:
                continue
            self.metrics.jobs.labels(job.kind, "retry").inc()
            return

    async def _run(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        now = self.clock.now()
        if handler is None:
            await self.store.fail_job(job.id, f"no handler for job kind {job.kind!r}", now)
            return
        try:
            await handler(job)
        except RetryLater as exc:
            if exc.counts:
                await self._retry(job, str(exc), exc.delay)
            else:  # a scheduled wait, not a failure: no attempt used up
                now = self.clock.now()
                await self.store.defer_job(job.id, now + (exc.delay or 0.0), str(exc), now)
        except PermanentFailure as exc:
            await self._fail(job, str(exc))
        except StoreError as exc:
            await self._retry(job, f"store: {exc}", None)
        except asyncio.CancelledError:
            await asyncio.shield(self._retry(job, "interrupted by shutdown", 0.0))
            raise
        except Exception as exc:  # a handler bug must not kill the runner; it is recorded
            log.exception("job %s #%d (%s) crashed", job.kind, job.id, job.key)
            await self._retry(job, f"{type(exc).__name__}: {exc}", None)
        else:
            await self.store.finish_job(job.id, self.clock.now())
            self.metrics.jobs.labels(job.kind, "done").inc()

    async def _retry(self, job: Job, error: str, delay: float | None) -> None:
        if job.attempts >= self.settings.max_attempts:
            await self._fail(job, f"gave up after {job.attempts} attempts: {error}")
            return
        if delay is None:
            base = self.settings.backoff_base * 2 ** (job.attempts - 1)
            delay = min(self.settings.backoff_max, base) * random.uniform(0.8, 1.2)
        log.warning(
            "job %s #%d failed (attempt %d), retry in %.1fs: %s",
            job.kind,
            job.id,
            job.attempts,
            delay,
            error,
        )
        self.metrics.jobs.labels(job.kind, "retry").inc()
        now = self.clock.now()
        await self.store.retry_job(job.id, now + delay, error, now)

    async def _fail(self, job: Job, error: str) -> None:
        log.error("job %s #%d failed for good: %s", job.kind, job.id, error)
        self.metrics.jobs.labels(job.kind, "failed").inc()
        now = self.clock.now()
        await self.store.fail_job(job.id, error, now)
        if job.incident_id is not None:
            await self.store.append_event(
                job.incident_id,
                actor="alertpilot",
                kind=EventKind.JOB_FAILED,
                message=f"{job.kind} failed: {error}",
                now=now,
                data={"job": job.key},
                notify=False,
            )
