"""Escalation policy: when an incident pages PagerDuty.

Per playbook and severity (a playbook's ``escalation:``; ``DEFAULT_PAGING`` otherwise)::

    immediately           trigger now
    if_unacked DURATION   a durable timer job due at opened_at + DURATION; it pages only
                          if the incident is still triggered then (an ack in Slack counts)
    never                 no page (the Escalate button still pages at once)

The decision is made once, on ``playbook.matched`` (the pipeline contract: severity and
playbook are final then), or on ``incident.opened`` when no pipeline is registered.
With a pipeline, a fallback timer decides after ``pagerduty.decision_timeout`` should no
playbook.matched come, so a broken pipeline delays a page but never loses it. When
several playbooks matched, the most urgent rule wins. A raised severity decides again,
only ever towards paging sooner. Timers are jobs in the store: they survive restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from bot.core.clock import Clock
from bot.core.durations import format_duration
from bot.core.incidents import Incident, Status
from bot.pagerduty.sender import Pager, PageWrite, TriggerOutcome
from bot.pagerduty.state import PageState
from bot.playbook.model import DEFAULT_PAGING, PageRule
from bot.store.base import Job, NewJob, Store

log = logging.getLogger(__name__)

TIMER_KIND = "pagerduty.escalate"
DECIDE_KIND = "pagerduty.decide"


def urgency(rule: PageRule) -> tuple[int, float]:
    """Sort key: smaller pages sooner."""
    order = {"immediately": 0, "if_unacked": 1, "never": 2}[rule.when]
    return order, rule.after if rule.when == "if_unacked" else 0.0


def describe(rule: PageRule) -> str:
    if rule.when == "if_unacked":
        return f"page if not acknowledged within {format_duration(rule.after)}"
    return "page immediately" if rule.when == "immediately" else "never page"


def _apply(
    incident: Incident, state: PageState, rule: PageRule, *, attach: bool = True
) -> PageWrite:
    """The decision's effect on the state, with its timer (idempotent by key)."""
    jobs = []
    if rule.when == "if_unacked":
        due = incident.opened_at + rule.after
        jobs.append(
            NewJob(
                TIMER_KIND,
                f"{TIMER_KIND}:{incident.id}:{int(due)}",
                due_at=due,
                payload={
                    "incident_id": incident.id,
                    "after": rule.after,
                    "source": state.policy_source or "",
                },
                attach=attach,
            )
        )
        if state.escalation == "undecided":
            state.escalation, state.escalate_at = "scheduled", due
    elif rule.when == "never" and state.escalation == "undecided":
        state.escalation = "not_paged"
    return PageWrite(jobs=jobs)


class EscalationPolicy:
    def __init__(
        self,
        pager: Pager,
        store: Store,
        clock: Clock,
        *,
        pipeline_registered: Callable[[], bool],
        decision_timeout: float,
    ) -> None:
        self.pager = pager
        self.store = store
        self.clock = clock
        self.pipeline_registered = pipeline_registered
        self.decision_timeout = decision_timeout

    def rule_for(self, incident: Incident, names: Sequence[str]) -> tuple[PageRule, str, list[str]]:
        """The rule, where it comes from (for people), and the playbooks it considered."""
        severity = incident.severity
        playbooks = self.pager.playbooks_for(incident, list(names))
        if not playbooks:
            return DEFAULT_PAGING[severity], f"default for {severity.value}", []
        rule, name = min(
            ((p.escalation.rule_for(severity), p.name) for p in playbooks),
            key=lambda pair: urgency(pair[0]),
        )
        return rule, f"playbook {name}, {severity.value}", [p.name for p in playbooks]

    # timeline events ----------------------------------------------------------------
    async def on_opened(self, job: Job, incident_id: int) -> None:
        if not self.pipeline_registered():
            await self.decide(job, incident_id, names=())
            return
        incident = await self.store.get_incident(incident_id, timeline=False)
        await self.store.enqueue_job(
            DECIDE_KIND,
            f"{DECIDE_KIND}:{incident_id}",
            due_at=incident.opened_at + self.decision_timeout,
            incident_id=incident_id,
        )

    async def decide(self, job: Job, incident_id: int, *, names: Sequence[str]) -> None:
        """Record the rule (first call only) and apply it; safe to repeat after a crash."""
        decided: list[tuple[PageRule, str, bool]] = []  # rule, where from, decided now

        def step(incident: Incident, state: PageState) -> PageWrite:
            first = state.policy is None
            if state.policy is None:
                rule, source, matched = self.rule_for(incident, names)
                state.policy, state.policy_after = rule.when, rule.after
                state.policy_source, state.playbooks = source, matched
                state.decided_at = self.clock.now()
            else:
                rule = PageRule(when=state.policy, after=state.policy_after)
            decided.append((rule, state.policy_source or "", first))
            return _apply(incident, state, rule)

        async with self.pager.locks(incident_id):
            await self.pager.change(incident_id, step)
        rule, source, first = decided[0]
        if first:
            log.info("incident #%d: %s (%s)", incident_id, describe(rule), source)
        if rule.when == "immediately":
            await self.pager.trigger(job, incident_id, reason=f"{describe(rule)} ({source})")

    async def on_severity(self, job: Job, incident_id: int) -> None:
        """Severity went up: page sooner if the new severity's rule says so."""
        raised: list[tuple[PageRule, str]] = []

        def step(incident: Incident, state: PageState) -> PageWrite | None:
            if state.policy is None:
                return None  # not decided yet: the decision will see the new severity
            current = PageRule(when=state.policy, after=state.policy_after)
            rule, source, _ = self.rule_for(incident, state.playbooks)
            if urgency(rule) >= urgency(current):
                return None
            state.policy, state.policy_after = rule.when, rule.after
            state.policy_source = f"{source}, severity raised"
            if state.alert == "none":
                state.escalation = "undecided"
            raised.append((rule, source))
            # detached: an earlier, later-due timer of this incident must not hold it up
            return _apply(incident, state, rule, attach=False)

        async with self.pager.locks(incident_id):
            await self.pager.change(incident_id, step)
        if not raised:
            return
        rule, source = raised[0]
        log.info("incident #%d: severity raised, now %s", incident_id, describe(rule))
        if rule.when == "immediately":
            await self.pager.trigger(job, incident_id, reason=f"{describe(rule)} ({source})")

    async def on_unacknowledged(self, job: Job, incident_id: int, *, at: float) -> None:
        """An acknowledgement that stopped an if_unacked page was withdrawn (at ``at``):
        wait the rule's DURATION again from then."""

        def step(incident: Incident, state: PageState) -> PageWrite | None:
            if not (
                state.policy == "if_unacked"
                and state.alert == "none"
                and state.escalation == "not_paged"
                and incident.status is Status.TRIGGERED
            ):
                return None
            due = at + state.policy_after
            state.escalation, state.escalate_at = "scheduled", due
            state.note = "acknowledgement withdrawn: waiting again"
            timer = NewJob(
                TIMER_KIND,
                f"{TIMER_KIND}:{incident_id}:{int(due)}",
                due_at=due,
                payload={
                    "incident_id": incident_id,
                    "after": state.policy_after,
                    "source": state.policy_source or "",
                },
                attach=False,
            )
            return PageWrite(jobs=[timer])

        async with self.pager.locks(incident_id):
            await self.pager.change(incident_id, step)

    async def escalate_now(self, job: Job, incident_id: int, *, reason: str) -> None:
        """The Escalate button, a failed remediation verify: page at once."""
        outcome = await self.pager.trigger(job, incident_id, reason=f"escalated: {reason}")
        if outcome is not TriggerOutcome.SENT:
            log.info("incident #%d: escalation did not page: %s", incident_id, outcome.value)

    # timer jobs ---------------------------------------------------------------------
    async def run_timer(self, job: Job) -> None:
        """``pagerduty.escalate``: due at opened_at + DURATION; pages if still unacknowledged."""
        incident_id = job.incident_id or int(job.payload.get("incident_id", 0))
        if not incident_id:
            return
        after = float(job.payload.get("after", 0.0))
        source = str(job.payload.get("source", ""))
        reason = f"not acknowledged within {format_duration(after)}" + (
            f" ({source})" if source else ""
        )
        outcome = await self.pager.trigger(
            job, incident_id, reason=reason, unless_acknowledged=True
        )
        log.info("incident #%d: escalation timer: %s", incident_id, outcome.value)

    async def run_decide(self, job: Job) -> None:
        """``pagerduty.decide``: no playbook.matched came in time; decide with what is known."""
        if job.incident_id is None:
            return
        _, state = await self.pager.load(job.incident_id)
        if state.policy is None:
            log.warning(
                "incident #%d: no playbook.matched within %s; paging by severity",
                job.incident_id,
                format_duration(self.decision_timeout),
            )
            await self.decide(job, job.incident_id, names=())
