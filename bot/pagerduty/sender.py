"""The one place that sends an incident's events to PagerDuty, and what it remembers.

State lives in ``incident.data["pagerduty"]`` (``PageState``). Every change to it is
decided inside ``store.change_incident`` on the state as it is then (``Pager.change``),
so no writer overwrites another's change with a stale copy; and each send with the
change that records it happens under that incident's lock, so the escalation timer, the
timeline subscriber and the webhook never interleave their sends. One trigger per
incident: once PagerDuty holds the alert, a trigger is never sent again; acknowledge and
resolve follow only a trigger that was sent. A trigger's intent is written before it is
sent; a retry that finds the intent (the process died, or the answer was lost, after
PagerDuty may have taken it) first asks the REST API for an incident with that
``dedup_key`` and sends nothing if there is one. Without ``pagerduty.api_token`` (or
when the lookup fails) it sends again: at least once, and the ``dedup_key`` makes the
repeat harmless to responders.

    Events API answer        what happens
    202                      state written, ``page`` event on the timeline
    429 / 5xx / no answer    RetryLater(backoff; at least Retry-After for a 429)
    other 4xx (400 ...)      ``page`` event "rejected", PermanentFailure (not retried)
    over the rate limit      RetryLater(until its reserved slot), nothing sent
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from bot.core.clock import Clock
from bot.core.incidents import EventKind, Incident, Status
from bot.errors import PermanentFailure, RetryLater
from bot.notify.links import NO_LINKS, LinkPolicy
from bot.pagerduty.events import EventsApiError, EventsClient, RateLimiter
from bot.pagerduty.payload import SEVERITY, follow_event, trigger_event
from bot.pagerduty.rest import IncidentFinder, RestUnavailable
from bot.pagerduty.state import (
    ALERT_FOR_STATUS,
    Action,
    AlertState,
    PageState,
    PdIncident,
    already_paged,
    follows,
    holds,
    repaged,
    state_of,
)
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from bot.runtime.locks import KeyedLocks
from bot.runtime.shared_limits import SharedWindow
from bot.settings import PagerDutySettings
from bot.store.base import IncidentChange, Job, NewEvent, NewJob, Store

log = logging.getLogger(__name__)


class TriggerOutcome(StrEnum):
    SENT = "sent"
    FOUND = "found in PagerDuty"  # an earlier attempt had reached it: not sent again
    ALREADY = "already paged"
    RESOLVED = "incident resolved"
    ACKNOWLEDGED = "incident acknowledged"


@dataclass(frozen=True)
class PageWrite:
    """What a ``PageStep`` writes with the state it changed."""

    events: Sequence[NewEvent] = ()
    jobs: Sequence[NewJob] = ()


PageStep = Callable[[Incident, PageState], PageWrite | None]


def _intent(since: float | None) -> PageStep:
    """Write a trigger's intent before it goes out (an earlier attempt's is kept), or
    with None clear it: PagerDuty answered that it did not take the trigger."""

    def mark(_: Incident, state: PageState) -> PageWrite | None:
        if (state.triggering_since is None) == (since is None):
            return None
        state.triggering_since = since
        return PageWrite()

    return mark


class PagerDutyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "alertpilot_pagerduty_events",
            "Events API v2 sends (and REST API escalations: action escalate) by action and"
            " outcome (sent, queued, retry, rejected, failed).",
            ["action", "outcome"],
            registry=registry,
        )
        self.webhooks = Counter(
            "alertpilot_pagerduty_webhooks",
            "PagerDuty webhook events by type and outcome.",
            ["event_type", "outcome"],
            registry=registry,
        )


class Pager:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        client: EventsClient,
        settings: PagerDutySettings,
        metrics: PagerDutyMetrics,
        *,
        playbooks: Callable[[], PlaybookSet | None],
        finder: IncidentFinder | None = None,
        links: LinkPolicy = NO_LINKS,
    ) -> None:
        self.store = store
        self.links = links
        self.finder = finder
        self.clock = clock
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.playbook_set = playbooks
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.shared = SharedWindow(store, clock.now, "pagerduty:events:")  # with replicas
        self.locks = KeyedLocks(store.hold, "pagerduty")
        # the limiter's bucket: a digest, so the routing key itself is kept nowhere else
        self._bucket = hashlib.sha256(settings.routing_key.get_secret_value().encode()).hexdigest()

    # state --------------------------------------------------------------------------
    async def load(self, incident_id: int) -> tuple[Incident, PageState]:
        """The incident and its PagerDuty state, to read (changes go through ``change``)."""
        incident = await self.store.get_incident(incident_id, timeline=False)
        return incident, state_of(incident)

    async def change(self, incident_id: int, step: PageStep) -> PageState | None:
        """Run ``step`` on the incident and its PagerDuty state as they are inside the
        transaction; it changes the state in place and returns the events and jobs to
        write with it, or None to write nothing. Returns the state written, if any."""
        written: list[PageState] = []

        def apply(incident: Incident) -> IncidentChange:
            state = state_of(incident)
            out = step(incident, state)
            if out is None:
                return IncidentChange()
            written.append(state)
            return IncidentChange(
                data={"pagerduty": state.model_dump(mode="json")},
                events=out.events,
                jobs=out.jobs,
            )

        await self.store.change_incident(incident_id, apply, now=self.clock.now())
        return written[0] if written else None

    def playbooks_for(self, incident: Incident, names: list[str]) -> list[Playbook]:
        registry = self.playbook_set()
        if registry is None:
            return []
        wanted = names or ([incident.playbook] if incident.playbook else [])
        return [p for p in (registry.get(name) for name in wanted) if p is not None]

    # sends --------------------------------------------------------------------------
    async def trigger(
        self, job: Job, incident_id: int, *, reason: str, unless_acknowledged: bool = False
    ) -> TriggerOutcome:
        """Page for the incident unless PagerDuty already holds it or it is over.

        ``unless_acknowledged``: the if_unacked timer; an acknowledgement anywhere (Slack,
        the API, PagerDuty) before it is due means nobody needs waking.
        """
        outcome = TriggerOutcome.SENT
        seen: list[tuple[Incident, PageState]] = []

        def decide(incident: Incident, state: PageState) -> PageWrite | None:
            nonlocal outcome
            if already_paged(state):
                outcome = TriggerOutcome.ALREADY
                return None
            if incident.status is Status.RESOLVED:
                outcome = TriggerOutcome.RESOLVED
                if state.escalation != "scheduled":
                    return None
                state.escalation, state.note = "not_paged", "resolved before the page was due"
                return PageWrite()
            if unless_acknowledged and incident.status is Status.ACKNOWLEDGED:
                outcome = TriggerOutcome.ACKNOWLEDGED
                who = incident.acknowledged_by or "someone"
                state.escalation = "not_paged"
                state.note = f"acknowledged by {who} before the page was due"
                skipped = NewEvent(
                    actor="alertpilot",
                    kind=EventKind.PAGE,
                    message=f"no page: {state.note}",
                    data={"action": "trigger", "outcome": "skipped"},
                )
                return PageWrite(events=[skipped])
            seen.append((incident, state))
            return None  # to send: recorded once PagerDuty has it

        async with self.locks(incident_id):
            await self.change(incident_id, decide)
            if outcome is not TriggerOutcome.SENT:
                return outcome
            incident, state = seen[0]
            event = trigger_event(
                incident,
                playbooks=self.playbooks_for(incident, state.playbooks),
                reason=reason,
                links=self.links,
            )
            if state.triggering_since is not None and await self._found(incident, event, reason):
                return TriggerOutcome.FOUND
            await self.send(job, incident, event, reason)
            return TriggerOutcome.SENT

    async def _found(self, incident: Incident, event: dict[str, Any], reason: str) -> bool:
        """After an interrupted trigger: whether PagerDuty has an incident for its
        dedup_key; if so it is recorded as paged, and nothing is sent."""
        if self.finder is None:
            return False
        dedup_key = str(event["dedup_key"])
        try:
            found = await self.finder.find(dedup_key)
        except RestUnavailable as exc:
            log.warning("incident #%d: %s; sending the trigger again", incident.id, exc)
            return False
        if found is None:
            return False
        now = self.clock.now()
        ref = PdIncident(id=found.id, number=found.number, html_url=found.html_url)
        note = NewEvent(
            actor="alertpilot",
            kind=EventKind.PAGE,
            message=(
                f"PagerDuty already had the page (its incident {found.number or found.id}, "
                f"{found.status}): an earlier attempt reached it; not sent again"
            ),
            data={"action": "trigger", "outcome": "found", "dedup_key": dedup_key},
        )

        def record(_: Incident, state: PageState) -> PageWrite:
            holds(state, "trigger", dedup_key, now, reason)
            state.alert = ALERT_FOR_STATUS.get(found.status, "triggered")
            state.pd_incident, state.html_url = ref, ref.html_url or state.html_url
            return PageWrite(events=[note])

        await self.change(incident.id, record)
        self.metrics.events.labels("trigger", "found").inc()
        log.info("incident #%d: PagerDuty already had its trigger; not sent again", incident.id)
        return True

    async def follow(self, job: Job, incident_id: int, action: Action, *, reason: str) -> bool:
        """Acknowledge or resolve PagerDuty's alerts (the page and any re-page), each that a
        trigger opened and that differs."""
        async with self.locks(incident_id):
            incident, state = await self.load(incident_id)
            sent = False
            if follows(state.alert, action):
                await self.send(job, incident, follow_event(incident, action), reason)
                sent = True
            for repage in state.repages:
                if not follows(repage.alert, action):
                    continue
                done = "acknowledged" if action == "acknowledge" else "resolved"
                await self.send(
                    job,
                    incident,
                    follow_event(incident, action, key=repage.dedup_key),
                    reason,
                    record=repaged(repage.level, action),
                    message=f"{done} the level {repage.level} re-page in PagerDuty: {reason}",
                )
                sent = True
            return sent

    async def observe_escalation(self, incident_id: int) -> None:
        """PagerDuty escalated the page itself (its policy's timeout, or a person there):
        the next level alertpilot asks for is above it."""

        def seen(_: Incident, state: PageState) -> PageWrite | None:
            if state.alert == "none":
                return None
            state.pd_escalations += 1
            return PageWrite()

        async with self.locks(incident_id):
            await self.change(incident_id, seen)

    async def observe(self, incident_id: int, alert: AlertState) -> None:
        """PagerDuty itself changed the alert (its webhook told us): remember, send nothing."""

        def seen(_: Incident, state: PageState) -> PageWrite | None:
            if state.alert == "none" or state.alert == alert or state.alert == "resolved":
                return None
            state.alert = alert
            return PageWrite()

        async with self.locks(incident_id):
            await self.change(incident_id, seen)

    async def remember_incident(self, incident_id: int, ref: PdIncident) -> None:
        def remember(_: Incident, state: PageState) -> PageWrite | None:
            if state.pd_incident == ref:
                return None
            state.pd_incident = ref
            state.html_url = ref.html_url or state.html_url
            return PageWrite()

        async with self.locks(incident_id):
            await self.change(incident_id, remember)

    def backoff(self, attempts: int) -> float:
        base = self.settings.retry_backoff * 2 ** max(0, attempts - 1)
        return float(min(self.settings.retry_backoff_max, base))

    async def send(
        self,
        job: Job,
        incident: Incident,
        event: dict[str, Any],
        reason: str,
        *,
        record: Callable[[PageState, float], None] | None = None,
        message: str | None = None,
    ) -> None:
        """Send one event; once PagerDuty took it, write what it holds (``record``; by
        default the page's own alert) with a ``page`` event (``message``). A trigger of
        the page itself writes its intent first."""
        action: Action = event["event_action"]
        intent = action == "trigger" and record is None
        wait = self.limiter.acquire(self._bucket, job.key, self.clock.monotonic())
        if wait <= 0 and self.shared.active:  # the replicas' events together, per key
            wait = await self.shared.take(self._bucket, self.settings.rate_limit_per_minute, 60.0)
        if wait > 0:
            self.metrics.events.labels(action, "queued").inc()
            raise RetryLater(
                f"more than {self.settings.rate_limit_per_minute} events/min for this "
                f"routing key: {action} queued for {wait:.1f}s",
                delay=wait,
                counts=False,
            )
        if intent:
            await self.change(incident.id, _intent(self.clock.now()))
        try:
            await self.client.send(event)
        except EventsApiError as exc:
            if intent and exc.status is not None and exc.status < 500:
                # PagerDuty answered that it did not take it: no need to look next time.
                # (No answer, or a 5xx, may follow a trigger it took: the intent stays.)
                await self.change(incident.id, _intent(None))
            if exc.transient:
                delay = max(self.backoff(job.attempts), exc.retry_after or 0.0)
                self.metrics.events.labels(action, "retry").inc()
                raise RetryLater(f"{action}: {exc}", delay=delay) from None
            await self._rejected(incident.id, action, exc, page=intent)
            raise PermanentFailure(f"PagerDuty rejected the {action}: {exc}") from None
        now = self.clock.now()
        if message is None:
            message = {
                "trigger": f"paged PagerDuty ({SEVERITY[incident.severity]}): {reason}",
                "acknowledge": f"acknowledged the page in PagerDuty: {reason}",
                "resolve": f"resolved the page in PagerDuty: {reason}",
            }[action]
        sent = NewEvent(
            actor="alertpilot",
            kind=EventKind.PAGE,
            message=message,
            data={
                "action": action,
                "outcome": "sent",
                "dedup_key": event["dedup_key"],
                "reason": reason,
            },
        )

        def recorded(_: Incident, state: PageState) -> PageWrite:  # PagerDuty has it: say so
            if record is None:
                holds(state, action, str(event["dedup_key"]), now, reason)
            else:
                record(state, now)
            return PageWrite(events=[sent])

        await self.change(incident.id, recorded)
        self.metrics.events.labels(action, "sent").inc()
        log.info("incident #%d: PagerDuty %s sent (%s)", incident.id, action, reason)

    async def _rejected(
        self, incident_id: int, action: Action, exc: EventsApiError, *, page: bool
    ) -> None:
        """Record a 4xx; ``page``: it was the page's own trigger (not a re-page's)."""
        self.metrics.events.labels(action, "rejected").inc()
        rejected = NewEvent(
            actor="alertpilot",
            kind=EventKind.PAGE,
            message=f"PagerDuty rejected the {action}, not retried: {exc}",
            data={
                "action": action,
                "outcome": "rejected",
                "status": exc.status,
                "errors": exc.errors,
            },
        )

        def record(_: Incident, state: PageState) -> PageWrite:
            if page:
                state.escalation, state.triggering_since = "rejected", None
            state.note = f"{action} rejected: {exc}"
            return PageWrite(events=[rejected])

        await self.change(incident_id, record)
        log.error("incident #%d: PagerDuty rejected the %s: %s", incident_id, action, exc)
