"""Response targets: acknowledge in time, resolve in time (``incident.data["targets"]``).

Per severity, ``response.ack_within`` and ``response.resolve_within`` (P0 5m and 4h, P1
15m and 24h, P2 1h); a matched playbook's ``escalation.ack_within``/``resolve_within``
replace them for its severities, and of several matched playbooks the shortest wins.

    targets          timeline subscriber: plans the timers on incident.opened,
                     playbook.matched and incident.severity; stops the acknowledgement
                     timer on incident.acknowledged, waits again on
                     incident.unacknowledged, stops every timer on incident.resolved
    targets.ack      due ack_from + ack_within while the incident is triggered: one level
                     up, as an ``incident.escalated`` event with ``level`` (PagerDuty
                     escalates or re-pages, Slack says so), then the next level's timer,
                     each ack_within later, up to ``response.max_level``
    targets.resolve  due opened_at + resolve_within: still open, the miss is a timeline
                     note and counted (``alertpilot_response_targets_missed_total``)

Timers are jobs in the store: they survive a restart and fire once. Each timer's key is
kept in the state; a timer whose key is no longer there (replanned, acknowledged,
resolved) does nothing, and the change that drops a key cancels its job in the same
transaction. Every level is escalated once: the timer that raises it is the only one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter

from bot.core.clock import Clock
from bot.core.durations import format_duration
from bot.core.incidents import Event, EventKind, Incident, Status
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from bot.records.targets import Escalated, TargetState, Timer, TimerName, targets_of
from bot.runtime.jobs import JobHandlers, Lane
from bot.settings import ResponseSettings, Severity
from bot.store.base import IncidentChange, Job, NewEvent, NewJob, Store

log = logging.getLogger(__name__)

SUBSCRIBER = "targets"
ACK_KIND = "targets.ack"
RESOLVE_KIND = "targets.resolve"
EVENTS = frozenset(
    {
        EventKind.OPENED,
        EventKind.PLAYBOOK,
        EventKind.SEVERITY,
        EventKind.ACKNOWLEDGED,
        EventKind.UNACKNOWLEDGED,
        EventKind.RESOLVED,
    }
)


class TargetMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.missed = Counter(
            "alertpilot_response_targets_missed",
            "Incidents that missed a response target (ack: not acknowledged in time, "
            "resolve: not resolved in time), counted once per incident and target.",
            ["target", "severity"],
            registry=registry,
        )


class ResponseTargets:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: ResponseSettings,
        metrics: TargetMetrics,
        *,
        playbooks: Callable[[], PlaybookSet | None],
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.playbook_set = playbooks

    def register(self, handlers: JobHandlers) -> None:
        handlers.register(
            SUBSCRIBER, self.on_event, subscribe=True, events=EVENTS, lane=Lane.NOTIFY
        )
        handlers.register(ACK_KIND, self.on_ack_timer, lane=Lane.NOTIFY, timer=True)
        handlers.register(RESOLVE_KIND, self.on_resolve_timer, lane=Lane.NOTIFY, timer=True)

    # the targets in force -----------------------------------------------------------
    def _playbooks(self, names: Sequence[str]) -> list[Playbook]:
        registry = self.playbook_set()
        if registry is None:
            return []
        return [p for p in (registry.get(name) for name in names) if p is not None]

    def targets_for(
        self, severity: Severity, names: Sequence[str]
    ) -> tuple[float | None, float | None, str]:
        """(ack_within, resolve_within, where they come from) for the severity, the
        matched playbooks' overrides first, the shortest of several."""
        ack = self.settings.ack_within.of(severity)
        resolve = self.settings.resolve_within.of(severity)
        source = f"default for {severity.value}"
        playbooks = self._playbooks(names)
        acks = {
            p.name: p.escalation.ack_within[severity]
            for p in playbooks
            if severity in p.escalation.ack_within
        }
        resolves = {
            p.name: p.escalation.resolve_within[severity]
            for p in playbooks
            if severity in p.escalation.resolve_within
        }
        if acks:
            ack = _shortest(list(acks.values()))
        if resolves:
            resolve = _shortest(list(resolves.values()))
        named = list(dict.fromkeys([*acks, *resolves]))
        if named:
            source = f"playbook {', '.join(named)}, {severity.value}"
        return ack, resolve, source

    # planning (inside the transaction) ------------------------------------------------
    def _plan(self, incident: Incident, state: TargetState) -> tuple[list[NewJob], list[str]]:
        """Bring the timers in line with the state: the jobs to add and the keys to cancel."""
        wanted: dict[TimerName, tuple[str, float]] = {}
        state.ack_due = None
        if (
            incident.status is Status.TRIGGERED
            and state.ack_within is not None
            and state.level < self.settings.max_level
        ):
            start = state.ack_from if state.ack_from is not None else incident.opened_at
            state.ack_due = start + state.ack_within
            wanted["ack"] = (ACK_KIND, state.ack_due)
        state.resolve_by = (
            incident.opened_at + state.resolve_within if state.resolve_within is not None else None
        )
        if (
            incident.status is not Status.RESOLVED
            and state.resolve_by is not None
            and state.resolve_missed_at is None
        ):
            wanted["resolve"] = (RESOLVE_KIND, state.resolve_by)
        jobs: list[NewJob] = []
        cancel: list[str] = []
        for name in ("ack", "resolve"):
            held = state.timers.get(name)
            want = wanted.get(name)
            if held is not None and want is not None and held.due == want[1]:
                continue
            if held is not None:
                cancel.append(held.key)
                del state.timers[name]
            if want is not None:
                kind, due = want
                state.seq += 1
                # fixed width: no key is the prefix of another (cancel takes prefixes)
                key = f"{kind}:{incident.id}:{state.seq:06d}"
                state.timers[name] = Timer(key=key, due=due)
                jobs.append(
                    NewJob(
                        kind,
                        key,
                        due_at=due,
                        payload={"incident_id": incident.id},
                        attach=False,  # a later-due timer must not hold up another's
                    )
                )
        return jobs, cancel

    def _choose(self, incident: Incident, state: TargetState, names: Sequence[str] | None) -> None:
        if names is not None:
            state.playbooks = list(names)
        matched = state.playbooks or ([incident.playbook] if incident.playbook else [])
        ack, resolve, source = self.targets_for(incident.severity, matched)
        state.severity, state.source = incident.severity, source
        state.ack_within, state.resolve_within = ack, resolve
        if state.ack_from is None:
            state.ack_from = incident.opened_at

    async def _change(
        self,
        incident_id: int,
        step: Callable[[Incident, TargetState], Sequence[NewEvent] | None],
    ) -> TargetState | None:
        """Run ``step`` on the incident and its state inside the transaction, then plan
        the timers; write nothing when ``step`` returns None."""
        written: list[TargetState] = []

        def apply(incident: Incident) -> IncidentChange:
            state = targets_of(incident)
            events = step(incident, state)
            if events is None:
                return IncidentChange()
            jobs, cancel = self._plan(incident, state)
            written.append(state)
            return IncidentChange(
                data={"targets": state.model_dump(mode="json")},
                events=events,
                jobs=jobs,
                cancel=cancel,
            )

        await self.store.change_incident(incident_id, apply, now=self.clock.now())
        return written[0] if written else None

    # timeline events ----------------------------------------------------------------
    async def on_event(self, job: Job) -> None:
        if job.incident_id is None:
            return
        event = await self._event(job.incident_id, int(job.payload.get("event_id", 0)))
        if event is None:
            return
        names: Sequence[str] | None = None
        if event.kind == EventKind.PLAYBOOK:
            raw = event.data.get("playbooks")
            names = [str(n) for n in raw if isinstance(n, str)] if isinstance(raw, list) else []

        def step(incident: Incident, state: TargetState) -> Sequence[NewEvent]:
            if event.kind in (EventKind.OPENED, EventKind.PLAYBOOK, EventKind.SEVERITY):
                self._choose(incident, state, names)
            elif event.kind == EventKind.UNACKNOWLEDGED and incident.status is Status.TRIGGERED:
                state.ack_from = event.at  # withdrawn: the wait for the next level starts again
            return ()

        await self._change(event.incident_id, step)

    async def _event(self, incident_id: int, event_id: int) -> Event | None:
        events = await self.store.events(incident_id, after=event_id - 1)
        return next((e for e in events if e.id == event_id), None)

    # timers -------------------------------------------------------------------------
    async def on_ack_timer(self, job: Job) -> None:
        """``targets.ack``: still not acknowledged: one level up, and the next timer."""
        incident_id = int(job.payload.get("incident_id", 0))
        missed: list[Severity] = []
        raised: list[int] = []

        def step(incident: Incident, state: TargetState) -> Sequence[NewEvent] | None:
            timer = state.timers.get("ack")
            if timer is None or timer.key != job.key:
                return None  # replanned, acknowledged or resolved meanwhile
            del state.timers["ack"]
            if incident.status is not Status.TRIGGERED or state.ack_within is None:
                return ()
            level = state.level + 1
            within = format_duration(state.ack_within)
            reason = f"not acknowledged within {within} ({state.source})"
            state.level, state.ack_from = level, timer.due
            state.escalations = [
                *state.escalations,
                Escalated(level=level, at=self.clock.now(), reason=reason),
            ]
            if state.ack_missed_at is None:
                state.ack_missed_at = self.clock.now()
                missed.append(incident.severity)
            raised.append(level)
            return [
                NewEvent(
                    actor="alertpilot",
                    kind=EventKind.ESCALATED,
                    message=f"escalated to level {level}: {reason}",
                    data={
                        "source": "alertpilot",
                        "reason": reason,
                        "level": level,
                        "target": "ack",
                        "within": state.ack_within,
                    },
                )
            ]

        if incident_id:
            await self._change(incident_id, step)
        for severity in missed:
            self.metrics.missed.labels("ack", severity.value).inc()
        if raised:
            log.warning("incident #%d: not acknowledged in time: level %d", incident_id, raised[0])

    async def on_resolve_timer(self, job: Job) -> None:
        """``targets.resolve``: still open at the resolve target: noted and counted."""
        incident_id = int(job.payload.get("incident_id", 0))
        missed: list[Severity] = []

        def step(incident: Incident, state: TargetState) -> Sequence[NewEvent] | None:
            timer = state.timers.get("resolve")
            if timer is None or timer.key != job.key:
                return None
            del state.timers["resolve"]
            if incident.status is Status.RESOLVED or state.resolve_within is None:
                return ()
            state.resolve_missed_at = self.clock.now()
            missed.append(incident.severity)
            within = format_duration(state.resolve_within)
            return [
                NewEvent(
                    actor="alertpilot",
                    kind=EventKind.NOTE,
                    message=f"resolve target missed: still open after {within} ({state.source})",
                    data={
                        "source": "alertpilot",
                        "target": "resolve",
                        "within": state.resolve_within,
                    },
                )
            ]

        if incident_id:
            await self._change(incident_id, step)
        for severity in missed:
            self.metrics.missed.labels("resolve", severity.value).inc()
            log.warning("incident #%d: resolve target missed", incident_id)


def _shortest(values: Sequence[float | None]) -> float | None:
    """The tightest of several targets; ``never`` only when all say so."""
    given = [v for v in values if v is not None]
    return min(given) if given else None
