"""The pipeline: playbook match -> diagnostics -> hand-over to remediation.

Two jobs, in two lanes (``bot.runtime.jobs.Lane``): the match is local and quick and decides
the page, so it runs in the notify lane (job kind ``pipeline``, a timeline subscriber
that acts on ``incident.opened`` only); diagnostics and remediation wait on upstreams,
so they run in the pipeline lane (job kind ``pipeline.diagnose``, enqueued with the
match). A page never waits for a diagnostic.

1. Match playbooks (``PlaybookSet.matching``) on the incident's common labels merged
   with its first firing alert's labels (the alert's win; they agree on common ones).
   Set ``incident.playbook`` (the first match) and the severity override (the first
   match that sets one) and record exactly one ``playbook.matched`` event with
   ``{"playbooks": [...], "severity": "P1"}`` (an empty list when none matched) and the
   ``pipeline.diagnose`` job, all in one transaction.
2. Run every diagnostic of the matched playbooks concurrently, each under its own
   timeout and all under the pipeline's deadline (``diagnostics.deadline``); a step
   without an answer is recorded as not checked, with why; store the results in
   ``incident.data["diagnostics"]``, one
   ``diagnostic.result`` event per step (``notify=False``: notifiers read the results
   from the incident when the summary arrives) and one ``diagnostics.done`` event
   (notified) with counts and a compact line per step, all in one transaction.
3. Hand over to remediation: ``plan(incident_id)`` of the engine under
   ``keys.REMEDIATION``, when there is one.

Nothing runs for a resolved incident: the match is still recorded (escalation decides
on it), diagnostics and remediation are skipped. A retried job repeats no step whose
event is already on the timeline. ``rerun_diagnostics`` (the Slack Re-run button) runs
step 2 again, with the person who asked as the actor.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from aiohttp import web

from bot import keys
from bot.core.clock import Clock
from bot.core.incidents import EventKind, Incident, Status
from bot.diagnostics import DiagnosticResult, Diagnostics, DiagnosticStatus, Sources
from bot.diagnostics.summary import tally
from bot.playbook.checks import Allowlists
from bot.playbook.loader import load_playbooks
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from bot.playbook.templating import environment
from bot.records.diagnostics import diagnostics_data
from bot.records.incident import pipeline_of
from bot.runtime.jobs import Lane
from bot.runtime.locks import KeyedLocks
from bot.runtime.metrics import Metrics
from bot.store.base import IncidentChange, Job, NewEvent, NewJob, Store

log = logging.getLogger(__name__)

ACTOR = "alertpilot"


class Planner(Protocol):
    """What the pipeline needs of remediation (``RemediationEngine`` under keys.REMEDIATION)."""

    async def plan(self, incident_id: int) -> object: ...


class RunStatus(StrEnum):
    DONE = "done"
    RESOLVED = "resolved"  # the incident is resolved: nothing ran
    NO_PLAYBOOK = "no_playbook"  # no playbook matched: nothing to run


@dataclass(frozen=True)
class DiagnosticsRun:
    status: RunStatus
    results: tuple[DiagnosticResult, ...] = ()
    message: str = ""


def match_labels(incident: Incident) -> dict[str, str]:
    """What playbooks match on: common labels, then the first firing alert's labels."""
    firing = incident.firing or list(incident.alerts)
    return {**incident.common_labels, **(firing[0].labels if firing else {})}


def summarise(results: Sequence[DiagnosticResult]) -> tuple[str, dict[str, Any]]:
    """The ``diagnostics.done`` message and data: failed, passed and not checked counted
    apart (``bot.diagnostics.summary``)."""
    counts = {status.value: 0 for status in DiagnosticStatus}
    for result in results:
        counts[result.status.value] += 1
    counted = tally(results)
    data = {
        "counts": counts,
        "failed": counted.failed,
        "passed": counted.passed,
        "errors": [r.name for r in results if r.status is DiagnosticStatus.ERROR],
        "not_checked": counted.not_checked,
        "results": [
            {"playbook": r.playbook, "name": r.name, "status": r.status.value,
             "passed": r.passed, "text": r.text}
            for r in results
        ],
    }  # fmt: skip
    return "diagnostics: " + counted.line(), data


class Pipeline:
    kind = "pipeline"
    diagnose_kind = "pipeline.diagnose"

    def __init__(
        self,
        store: Store,
        playbooks: PlaybookSet,
        diagnostics: Diagnostics,
        clock: Clock,
        remediation: Callable[[], Planner | None] = lambda: None,
        metrics: Metrics | None = None,
        deadline: float | None = None,
    ) -> None:
        self.store = store
        self.playbooks = playbooks
        self.diagnostics = diagnostics
        self.clock = clock
        self.remediation = remediation
        self.metrics = metrics
        self.deadline = deadline
        self._lock = KeyedLocks(store.hold, "pipeline")  # one incident's work at a time

    async def __call__(self, job: Job) -> None:
        """The ``pipeline`` job (notify lane): on ``incident.opened``, match and record the
        match with the ``pipeline.diagnose`` job."""
        if job.incident_id is None or job.payload.get("kind") != EventKind.OPENED:
            return
        async with self._lock(job.incident_id):
            await self._match(await self.store.get_incident(job.incident_id))

    async def diagnose_job(self, job: Job) -> None:
        """The ``pipeline.diagnose`` job (pipeline lane): diagnostics, then remediation."""
        if job.incident_id is None:
            return
        async with self._lock(job.incident_id):
            incident = await self.store.get_incident(job.incident_id)
            recorded = next((e for e in incident.timeline if e.kind == EventKind.PLAYBOOK), None)
            if recorded is not None:
                await self._continue(incident, self._loaded(recorded.data.get("playbooks")))

    async def run(self, incident_id: int) -> None:
        """Both jobs' work at once: match, diagnose, plan (a retried run repeats nothing)."""
        async with self._lock(incident_id):
            incident = await self.store.get_incident(incident_id)
            matched = await self._match(incident)
            await self._continue(await self.store.get_incident(incident_id), matched)

    async def _continue(self, incident: Incident, matched: list[Playbook]) -> None:
        incident_id = incident.id
        if incident.status is Status.RESOLVED:
            await self._state(incident_id, "skipped: the incident is resolved")
            return
        if not matched:
            await self._state(incident_id, "done: no playbook")
            return
        if not any(e.kind == EventKind.DIAGNOSTICS_DONE for e in incident.timeline):
            await self._diagnose(incident, matched, actor=ACTOR, run="initial")
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED:
            await self._state(incident_id, "skipped remediation: the incident is resolved")
            return
        planner = self.remediation()
        if planner is not None:
            await planner.plan(incident_id)
        await self._state(incident_id, "done")

    async def _match(self, incident: Incident) -> list[Playbook]:
        """Match, set playbook and severity, and record ``playbook.matched`` exactly once.

        The playbook, the severity override, ``data["pipeline"]`` and the event are written
        in one transaction: all of them or none. ``matched_at`` in ``data["pipeline"]`` is
        written only with the event, so a run that finds it (another run recorded the match
        after this one read the timeline) writes nothing and keeps what was recorded.
        """
        recorded = next((e for e in incident.timeline if e.kind == EventKind.PLAYBOOK), None)
        if recorded is not None:  # a retried job: keep what was decided
            return self._loaded(recorded.data.get("playbooks"))
        matched = self.playbooks.matching(match_labels(incident))
        names = [p.name for p in matched]
        override = next((p.severity for p in matched if p.severity is not None), None)
        now = self.clock.now()
        decided: list[list[str] | None] = []  # the names recorded before this run could write
        messages: list[str] = []

        def record(current: Incident) -> IncidentChange:
            decided.clear()
            messages.clear()
            state = pipeline_of(current)
            if state.matched_at is not None:  # recorded meanwhile, with its event
                decided.append(state.playbooks)
                return IncidentChange()
            severity = override or current.severity
            if names:
                message = f"playbook {', '.join(names)} matched"
                if severity is not current.severity:
                    message += f"; severity {current.severity.value} -> {severity.value}"
            else:
                message = "no playbook matched"
            messages.append(message)
            event = NewEvent(
                ACTOR, EventKind.PLAYBOOK, message, {"playbooks": names, "severity": severity.value}
            )
            diagnose = NewJob(self.diagnose_kind, f"{self.diagnose_kind}:{current.id}", due_at=now)
            matched = state.model_copy(
                update={
                    "playbooks": names,
                    "state": "matched" if names else "done: no playbook",
                    "matched_at": now,
                }
            )
            return IncidentChange(
                data={"pipeline": matched.dump()},
                events=[event],
                jobs=[diagnose] if names else [],
                severity=override,
                playbook=names[0] if names else None,
            )

        await self.store.change_incident(incident.id, record, now=now)
        if decided:
            return self._loaded(decided[0])
        log.info("incident #%d: %s", incident.id, messages[0] if messages else "matched")
        return matched

    def _loaded(self, names: object) -> list[Playbook]:
        """The loaded playbooks of a recorded list of names."""
        listed = [str(n) for n in names] if isinstance(names, list) else []
        return [p for n in listed if (p := self.playbooks.get(n)) is not None]

    async def _diagnose(
        self, incident: Incident, playbooks: Sequence[Playbook], *, actor: str, run: str
    ) -> list[DiagnosticResult]:
        results = await self.diagnostics.for_incident(playbooks, incident, deadline=self.deadline)
        if self.metrics is not None:
            for result in results:
                self.metrics.diagnostics.labels(result.kind, result.status.value).inc()
        now = self.clock.now()
        message, data = summarise(results)
        if actor != ACTOR:
            message = message.replace("diagnostics:", f"diagnostics re-run by {actor}:", 1)
        events = [
            NewEvent(actor, EventKind.DIAGNOSTIC, r.text, r.to_json(), notify=False)
            for r in results
        ]
        events.append(NewEvent(actor, EventKind.DIAGNOSTICS_DONE, message, {"run": run, **data}))
        names = [p.name for p in playbooks]

        def record(current: Incident) -> IncidentChange:  # results and events, all or none
            state = pipeline_of(current).model_copy(
                update={"playbooks": names, "state": "diagnosed", "diagnosed_at": now}
            )
            return IncidentChange(
                data={"diagnostics": diagnostics_data(results), "pipeline": state.dump()},
                events=events,
            )

        await self.store.change_incident(incident.id, record, now=now)
        return results

    async def _state(self, incident_id: int, state: str) -> None:
        def change(current: Incident) -> IncidentChange:
            progress = pipeline_of(current).model_copy(update={"state": state})
            return IncidentChange(data={"pipeline": progress.dump()})

        await self.store.change_incident(incident_id, change, now=self.clock.now())

    async def rerun_diagnostics(self, incident_id: int, actor: str) -> DiagnosticsRun:
        """Run the incident's diagnostics again (the Re-run button); never when resolved."""
        async with self._lock(incident_id):
            incident = await self.store.get_incident(incident_id, timeline=False)
            if incident.status is Status.RESOLVED:
                return DiagnosticsRun(
                    RunStatus.RESOLVED, message=f"incident #{incident_id} is resolved"
                )
            names = pipeline_of(incident).playbooks or (
                [incident.playbook] if incident.playbook else []
            )
            playbooks = [p for n in names if (p := self.playbooks.get(n)) is not None]
            if not playbooks:
                return DiagnosticsRun(
                    RunStatus.NO_PLAYBOOK, message=f"incident #{incident_id} has no playbook"
                )
            results = await self._diagnose(incident, playbooks, actor=actor, run="rerun")
            message, _ = summarise(results)
            return DiagnosticsRun(
                RunStatus.DONE, tuple(results), message.removeprefix("diagnostics: ")
            )


def setup(app: web.Application) -> None:
    """Load the playbooks, register the ``pipeline`` subscriber, build it at startup."""
    settings = app[keys.SETTINGS]
    app[keys.PLAYBOOKS] = load_playbooks(settings)

    async def handle(job: Job) -> None:
        await app[keys.PIPELINE](job)

    async def diagnose(job: Job) -> None:
        await app[keys.PIPELINE].diagnose_job(job)

    handlers = app[keys.HANDLERS]
    handlers.register(
        Pipeline.kind, handle, subscribe=True, events=[EventKind.OPENED], lane=Lane.NOTIFY
    )
    handlers.register(Pipeline.diagnose_kind, diagnose, lane=Lane.PIPELINE)
    app.cleanup_ctx.append(_pipeline_ctx)


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    sources = Sources(
        prometheus=app[keys.PROMETHEUS],
        alertmanager=app[keys.ALERTMANAGER],
        http=app[keys.HTTP],
        allowed_urls=Allowlists.from_settings(settings).diagnostic_urls,
        clock=app[keys.CLOCK],
        env=environment(),
        breakers=app[keys.BREAKERS],
    )

    def remediation() -> Planner | None:  # looked up per run: remediation may be off
        return app.get(keys.REMEDIATION)

    app[keys.PIPELINE] = Pipeline(
        app[keys.STORE],
        app[keys.PLAYBOOKS],
        Diagnostics(sources, concurrency=settings.diagnostics.concurrency),
        app[keys.CLOCK],
        remediation,
        metrics=app[keys.METRICS],
        deadline=settings.diagnostics.deadline,
    )
    yield
