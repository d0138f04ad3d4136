"""One escalation level up in PagerDuty, when nobody acknowledged in time.

``bot.targets`` records an ``incident.escalated`` event with ``level`` when an incident
misses its acknowledgement target; the PagerDuty subscriber hands it here. The Events
API v2 cannot choose an escalation level, so:

    no page out yet          page now (its rule is if_unacked and not yet due); a
                             ``never`` rule pages not (the Escalate button does), nor
                             does a trigger PagerDuty rejected
    pagerduty.api_token set  the REST API's incident escalate: ``PUT /incidents/{id}``
                             with ``escalation_level`` one above the level known (the
                             level asked for before, or PagerDuty's own escalations seen
                             in webhooks, whichever is higher)
    otherwise, or when the
    REST API refuses         a re-page: a new trigger with its own dedup_key (``-L2``),
                             PagerDuty's severity raised one step, ``[RE-PAGE level 2]``
                             in its summary; acknowledge and resolve follow it like the page

Each level goes out once: what was done for it is kept in ``PageState.levels``, written
with the ``page`` event that tells the timeline (and Slack's thread) which way it went.
"""

from __future__ import annotations

import logging
from typing import Literal

from bot.core.incidents import EventKind, Incident, Status
from bot.pagerduty.payload import RAISED, SEVERITY, dedup_key, repage_event
from bot.pagerduty.rest import IncidentEscalator, IncidentFinder, RestUnavailable
from bot.pagerduty.sender import Pager, PageWrite, TriggerOutcome
from bot.pagerduty.state import LevelSent, PageState, PdIncident, Repage
from bot.store.base import Job, NewEvent, Store

log = logging.getLogger(__name__)

REPAGE_MAP_TTL = 30 * 86400.0  # a re-page's dedup_key -> incident, for PagerDuty's webhooks


def repage_map_key(key: str) -> str:
    """The key-value entry that leads a webhook about a re-page to its incident."""
    return f"pagerduty:dedup:{key}"


class LevelEscalator:
    def __init__(
        self,
        pager: Pager,
        store: Store,
        *,
        escalator: IncidentEscalator | None,
        finder: IncidentFinder | None,
    ) -> None:
        self.pager = pager
        self.store = store
        self.escalator = escalator
        self.finder = finder

    async def escalate(self, job: Job, incident_id: int, *, step: int, reason: str) -> str:
        """Take the incident to alertpilot's escalation level ``step``; say how."""
        async with self.pager.locks(incident_id):
            incident, state = await self.pager.load(incident_id)
            if any(sent.step == step for sent in state.levels):
                return "already"
            if incident.status is not Status.TRIGGERED:
                return f"incident {incident.status.value}"  # acknowledged meanwhile: enough
            if state.alert == "none" and state.policy == "never":
                await self._skipped(incident, step, state)
                return "not paged"
            if state.alert not in ("none", "triggered"):
                return f"page {state.alert}"
            if state.alert == "none" and state.escalation == "rejected":
                return "the page was rejected"  # the same trigger would be rejected again
            if state.alert == "triggered":
                target = max(state.level, 1 + state.pd_escalations) + 1
                refused = await self._rest(incident, state, step, target, reason)
                if refused is None:
                    return "escalated"
                await self._repage(job, incident, state, step, target, reason, refused)
                return "re-paged"
        # No page out yet (an if_unacked rule not due yet, a rejected trigger): page now.
        outcome = await self.pager.trigger(
            job, incident_id, reason=f"{reason}: level {step}", unless_acknowledged=True
        )
        paged = outcome in (TriggerOutcome.SENT, TriggerOutcome.FOUND, TriggerOutcome.ALREADY)
        how: Literal["page", "skipped"] = "page" if paged else "skipped"
        await self._record(incident_id, LevelSent(step=step, how=how, at=self._now()))
        return "paged" if outcome is TriggerOutcome.SENT else outcome.value

    def _now(self) -> float:
        return self.pager.clock.now()

    async def _record(
        self, incident_id: int, sent: LevelSent, event: NewEvent | None = None
    ) -> None:
        def write(_: Incident, state: PageState) -> PageWrite:
            state.levels = [*state.levels, sent]
            if sent.pd_level is not None:
                state.level = max(state.level, sent.pd_level)
            return PageWrite(events=[event] if event is not None else [])

        await self.pager.change(incident_id, write)

    async def _skipped(self, incident: Incident, step: int, state: PageState) -> None:
        source = state.policy_source or f"default for {incident.severity.value}"
        note = NewEvent(
            actor="alertpilot",
            kind=EventKind.PAGE,
            message=(
                f"no page for level {step}: the escalation rule ({source}) never pages;"
                " the Escalate button pages"
            ),
            data={"action": "escalate", "outcome": "skipped", "level": step},
        )
        await self._record(incident.id, LevelSent(step=step, how="skipped", at=self._now()), note)

    async def _pd_incident(self, incident: Incident, state: PageState) -> PdIncident | None:
        """PagerDuty's incident for the page: known from a webhook, or looked up."""
        if state.pd_incident is not None:
            return state.pd_incident
        if self.finder is None:
            return None
        try:
            found = await self.finder.find(dedup_key(incident))
        except RestUnavailable as exc:
            log.warning("incident #%d: %s", incident.id, exc)
            return None
        if found is None:
            return None
        ref = PdIncident(id=found.id, number=found.number, html_url=found.html_url)

        def remember(_: Incident, held: PageState) -> PageWrite:
            held.pd_incident, held.html_url = ref, ref.html_url or held.html_url
            return PageWrite()

        await self.pager.change(incident.id, remember)
        return ref

    async def _rest(
        self, incident: Incident, state: PageState, step: int, target: int, reason: str
    ) -> str | None:
        """Escalate through the REST API; None when done, else why it was not."""
        if self.escalator is None:
            return "no pagerduty.api_token"
        ref = await self._pd_incident(incident, state)
        if ref is None:
            return "PagerDuty's incident for the page is not known"
        try:
            await self.escalator.escalate(ref.id, target)
        except RestUnavailable as exc:
            self.pager.metrics.events.labels("escalate", "failed").inc()
            return str(exc)
        self.pager.metrics.events.labels("escalate", "sent").inc()
        number = ref.number or ref.id
        event = NewEvent(
            actor="alertpilot",
            kind=EventKind.PAGE,
            message=(
                f"escalated PagerDuty's incident {number} to level {target} (REST API): {reason}"
            ),
            data={
                "action": "escalate",
                "outcome": "sent",
                "via": "rest",
                "level": target,
                "reason": reason,
            },
        )
        sent = LevelSent(step=step, how="rest", at=self._now(), pd_level=target)
        await self._record(incident.id, sent, event)
        log.info("incident #%d: PagerDuty incident escalated to level %d", incident.id, target)
        return None

    async def _repage(
        self,
        job: Job,
        incident: Incident,
        state: PageState,
        step: int,
        target: int,
        reason: str,
        refused: str,
    ) -> None:
        """A new trigger for level ``target``, followed like the page."""
        event = repage_event(
            incident,
            level=target,
            playbooks=self.pager.playbooks_for(incident, state.playbooks),
            reason=reason,
            links=self.pager.links,
        )
        key = str(event["dedup_key"])
        severity = RAISED[SEVERITY[incident.severity]]
        why = "" if self.escalator is None else f" (the REST API did not escalate: {refused})"

        def record(held: PageState, now: float) -> None:
            held.repages = [*held.repages, Repage(level=target, dedup_key=key, at=now)]
            held.levels = [
                *held.levels,
                LevelSent(step=step, how="repage", at=now, pd_level=target),
            ]
            held.level = max(held.level, target)

        await self.store.kv_set(
            repage_map_key(key), str(incident.id), now=self._now(), ttl=REPAGE_MAP_TTL
        )
        await self.pager.send(
            job,
            incident,
            event,
            reason,
            record=record,
            message=(
                f"re-paged PagerDuty for level {target} ({severity}, a new alert {key}){why}:"
                f" {reason}"
            ),
        )
