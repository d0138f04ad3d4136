"""``notify.pagerduty``: the timeline subscriber that keeps PagerDuty in step.

It sees every timeline event once, in order per incident, and decides per event::

    incident.opened / playbook.matched   escalation decision (bot.pagerduty.escalation)
    incident.severity                    decide again, only towards paging sooner
    incident.escalated                   trigger now (Escalate button, failed verify);
                                         with ``level`` (an acknowledgement target
                                         missed, bot.targets): one level up
                                         (bot.pagerduty.levels)
    incident.acknowledged                acknowledge, unless PagerDuty itself acked
                                         (then only the re-pages, if any)
    incident.unacknowledged              an if_unacked page the ack stopped waits again
    incident.resolved                    resolve, unless PagerDuty itself resolved
    anything else                        nothing

Acknowledge and resolve go out only for a trigger that was sent. ``build`` assembles
the feature from explicit dependencies; ``bot.pagerduty.setup.setup`` wires it into the app.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry

from bot.core.clock import Clock
from bot.core.incidents import Event, EventKind
from bot.core.transitions import IncidentActions
from bot.errors import ConfigError
from bot.notify.links import NO_LINKS, LinkPolicy
from bot.pagerduty.ack_silences import KIND as SILENCE_KIND
from bot.pagerduty.ack_silences import AckSilencer
from bot.pagerduty.escalation import DECIDE_KIND, TIMER_KIND, EscalationPolicy
from bot.pagerduty.events import EventsClient, ssl_context
from bot.pagerduty.levels import LevelEscalator
from bot.pagerduty.oncall import OnCallDirectory
from bot.pagerduty.rest import IncidentEscalator, IncidentFinder, RestSettings
from bot.pagerduty.sender import Pager, PagerDutyMetrics
from bot.pagerduty.webhooks import PagerDutyWebhooks
from bot.playbook.registry import PlaybookSet
from bot.runtime.jobs import JobHandlers, Lane
from bot.settings import PagerDutySettings
from bot.silences.service import SilenceService
from bot.store.base import Job, Store
from bot.upstream.alertmanager import AlertmanagerClient

log = logging.getLogger(__name__)


class PagerDutyNotifier:
    kind = "notify.pagerduty"
    EVENTS = frozenset(
        {
            EventKind.OPENED,
            EventKind.PLAYBOOK,
            EventKind.SEVERITY,
            EventKind.ESCALATED,
            EventKind.ACKNOWLEDGED,
            EventKind.UNACKNOWLEDGED,
            EventKind.RESOLVED,
        }
    )
    """The timeline events that can send, hold or time a page."""

    def __init__(
        self,
        store: Store,
        pager: Pager,
        policy: EscalationPolicy,
        levels: LevelEscalator,
        *,
        ack_silences: bool,
    ) -> None:
        self.store = store
        self.pager = pager
        self.policy = policy
        self.levels = levels
        self.ack_silences = ack_silences

    async def __call__(self, job: Job) -> None:
        if job.incident_id is None:
            return
        event = await self._event(job.incident_id, int(job.payload.get("event_id", 0)))
        if event is None:
            return
        incident_id = event.incident_id
        from_pagerduty = event.data.get("source") == "pagerduty"
        kind = event.kind
        if kind == EventKind.OPENED:
            await self.policy.on_opened(job, incident_id)
        elif kind == EventKind.PLAYBOOK:
            names = event.data.get("playbooks")
            matched: Sequence[str] = (
                [str(n) for n in names if isinstance(n, str)] if isinstance(names, list) else ()
            )
            await self.policy.decide(job, incident_id, names=matched)
        elif kind == EventKind.SEVERITY:
            await self.policy.on_severity(job, incident_id)
        elif kind == EventKind.ESCALATED and not from_pagerduty:
            reason = str(event.data.get("reason") or event.message)
            level = event.data.get("level")
            if isinstance(level, int) and event.data.get("target") == "ack":
                outcome = await self.levels.escalate(job, incident_id, step=level, reason=reason)
                log.info("incident #%d: level %d: %s", incident_id, level, outcome)
            else:
                by = f"{reason} (by {event.actor})"
                await self.policy.escalate_now(job, incident_id, reason=by)
        elif kind == EventKind.ACKNOWLEDGED:
            if self.ack_silences:
                await self.store.enqueue_job(
                    SILENCE_KIND,
                    f"{SILENCE_KIND}:create:{event.id}",
                    due_at=event.at,
                    incident_id=incident_id,
                    payload={"action": "create", "actor": event.actor},
                )
            if from_pagerduty and not await self._repaged(incident_id):
                await self.pager.observe(incident_id, "acknowledged")
            else:  # PagerDuty's ack may have been the page's or a re-page's: tell the rest
                await self.pager.follow(job, incident_id, "acknowledge", reason=event.message)
        elif kind == EventKind.UNACKNOWLEDGED:
            if from_pagerduty:
                await self.pager.observe(incident_id, "triggered")
            await self.policy.on_unacknowledged(job, incident_id, at=event.at)
        elif kind == EventKind.RESOLVED:  # ack silences: the silence service expires them
            if from_pagerduty and not await self._repaged(incident_id):
                await self.pager.observe(incident_id, "resolved")
            else:
                await self.pager.follow(job, incident_id, "resolve", reason=event.message)

    async def _event(self, incident_id: int, event_id: int) -> Event | None:
        events = await self.store.events(incident_id, after=event_id - 1)
        return next((e for e in events if e.id == event_id), None)

    async def _repaged(self, incident_id: int) -> bool:
        """Whether the incident has re-pages: PagerDuty's acknowledgement or resolution of
        one of its alerts is then sent to the others (again to that one: harmless)."""
        _, state = await self.pager.load(incident_id)
        return bool(state.repages)


@dataclass
class PagerDutyFeature:
    settings: PagerDutySettings
    pager: Pager
    policy: EscalationPolicy
    levels: LevelEscalator
    notifier: PagerDutyNotifier
    webhooks: PagerDutyWebhooks
    silencer: AckSilencer | None
    oncall: OnCallDirectory | None

    def register(self, handlers: JobHandlers) -> None:
        handlers.register(
            self.notifier.kind,
            self.notifier,
            subscribe=True,
            events=PagerDutyNotifier.EVENTS,
            lane=Lane.NOTIFY,
        )
        handlers.register(TIMER_KIND, self.policy.run_timer, lane=Lane.NOTIFY, timer=True)
        handlers.register(DECIDE_KIND, self.policy.run_decide, lane=Lane.NOTIFY, timer=True)
        if self.silencer is not None:  # Alertmanager's answer: the pipeline lane's wait
            handlers.register(SILENCE_KIND, self.silencer)


def _ssl(settings: PagerDutySettings) -> ssl.SSLContext:
    try:
        return ssl_context(settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"pagerduty.ca_file: cannot load {settings.ca_file}: {exc}"]) from None


def build(
    settings: PagerDutySettings,
    *,
    store: Store,
    clock: Clock,
    actions: IncidentActions,
    registry: CollectorRegistry,
    http: Callable[[], aiohttp.ClientSession],
    alertmanager: Callable[[], AlertmanagerClient],
    playbooks: Callable[[], PlaybookSet | None],
    pipeline_registered: Callable[[], bool],
    silences: SilenceService | None = None,
    links: LinkPolicy = NO_LINKS,
) -> PagerDutyFeature:
    """The PagerDuty feature from explicit dependencies (providers are read at run time);
    ``ack_silences`` records its silences through ``silences``; a trigger carries the
    links that came with the alert only where ``links`` allows."""
    ctx = _ssl(settings)
    metrics = PagerDutyMetrics(registry)
    client = EventsClient(
        http, settings.events_url, settings.routing_key, timeout=settings.timeout, ssl_ctx=ctx
    )
    rest = None
    if settings.api_token is not None:
        rest = RestSettings(
            api_url=settings.api_url,
            api_token=settings.api_token,
            ssl_ctx=ctx,
            timeout=settings.timeout,
            retry_delay=settings.api_retry_delay,
            from_email=settings.from_email,
        )
    finder = IncidentFinder(rest) if rest is not None else None
    pager = Pager(
        store, clock, client, settings, metrics, playbooks=playbooks, finder=finder, links=links
    )
    levels = LevelEscalator(
        pager,
        store,
        escalator=IncidentEscalator(rest) if rest is not None else None,
        finder=finder,
    )
    policy = EscalationPolicy(
        pager,
        store,
        clock,
        pipeline_registered=pipeline_registered,
        decision_timeout=settings.decision_timeout,
    )
    oncall = None
    if rest is not None:
        oncall = OnCallDirectory(rest, clock=clock, ttl=settings.oncall_cache_ttl)
    silencer = None
    if settings.ack_silences:
        if silences is None:
            raise ValueError("pagerduty.ack_silences needs the silence service")
        silencer = AckSilencer(
            store, alertmanager, silences, duration=settings.ack_silence_duration
        )
    return PagerDutyFeature(
        settings=settings,
        pager=pager,
        policy=policy,
        levels=levels,
        notifier=PagerDutyNotifier(
            store, pager, policy, levels, ack_silences=settings.ack_silences
        ),
        webhooks=PagerDutyWebhooks(
            store, clock, actions, pager, metrics, retention=settings.seen_event_retention
        ),
        silencer=silencer,
        oncall=oncall,
    )
