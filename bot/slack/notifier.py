"""The ``notify.slack`` job subscriber: one Slack message per incident, kept current.

For every timeline event (in order, one job at a time per incident):

1. no message yet: route the incident to a channel (``slack.routes``, first match wins,
   ``slack.default_channel`` otherwise), count it for the storm roll-up, post the
   message (in the roll-up's thread during a storm) and keep channel, ts and permalink
   in ``incident.data["slack"]`` (``SlackPost``, ``bot.records.slack``);
2. a message exists: reply in its thread when the event is worth reading there, then
   re-render the message from the incident's current state and ``chat.update`` it
   (skipped when it would not change);
3. status-update reminders while it is open and a postmortem draft once it resolves
   (``bot.slack.followups``).

Each reply is recorded in the store once sent, so a retried job never repeats one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.core.clock import Clock
from bot.core.incidents import Event, EventKind, Incident, IncidentBrief, Status
from bot.core.matchers import matches_all
from bot.errors import NotFound, RetryLater
from bot.notify.links import NO_LINKS, LinkPolicy
from bot.records.slack import (
    PostingIntent,
    ReplyPost,
    SlackPost,
    StormState,
    permalink_of,
    post_of,
    posting_of,
)
from bot.settings import ResponseSettings, SlackSettings
from bot.slack.features import AppFeatures
from bot.slack.followups import SlackFollowUps
from bot.slack.outbox import JsonDict, SlackOutbox
from bot.slack.render import Extras, Rendered, incident_message
from bot.slack.render_events import ROLLUP_SHOWN, event_reply, rollup_message, runbook_reply
from bot.slack.storm import StormTracker
from bot.store.base import Job, Store

log = logging.getLogger(__name__)


KV_TTL = 30 * 86400.0
CLOCK_SKEW = 120.0  # s: a retry looks for its earlier post from this long before its intent
GRAPH_KIND = "notify.slack.graph"
ROLLUP_KIND = "notify.slack.rollup"
_ROLLUP_EVENTS = frozenset(
    {EventKind.ACKNOWLEDGED, EventKind.UNACKNOWLEDGED, EventKind.RESOLVED, EventKind.SEVERITY}
)


class SlackRouter:
    def __init__(self, settings: SlackSettings) -> None:
        self.routes = settings.routes
        self.default = settings.default_channel

    def channel_for(self, incident: Incident) -> str:
        labels = {**incident.group_labels, **incident.common_labels}
        for route in self.routes:
            if matches_all(route.match, labels):
                return route.channel
        return self.default


class SlackNotifier:
    kind = "notify.slack"

    def __init__(
        self,
        store: Store,
        outbox: SlackOutbox,
        storms: StormTracker,
        settings: SlackSettings,
        features: AppFeatures,
        clock: Clock,
        *,
        alertmanager_url: str = "",
        links: LinkPolicy = NO_LINKS,
        response: ResponseSettings | None = None,
    ) -> None:
        self.store = store
        self.links = links
        self.outbox = outbox
        self.storms = storms
        self.settings = settings
        self.router = SlackRouter(settings)
        self.features = features
        self.clock = clock
        self.alertmanager_url = alertmanager_url
        self.rollup_debounce = max(5.0, 10.0 / settings.channel_rate)
        self.followups = SlackFollowUps(self, response or ResponseSettings())

    async def __call__(self, job: Job) -> None:
        await self._run(job, self._handle)

    async def rollup_job(self, job: Job) -> None:
        """The ``notify.slack.rollup`` job."""
        await self._run(job, self.update_rollup)

    async def _run(self, job: Job, step: Callable[[Job], Awaitable[None]]) -> None:
        deferred = False
        try:
            await step(job)
        except RetryLater:
            deferred = True  # a paced send keeps its reserved slot for the retry
            raise
        finally:
            if not deferred:
                self.outbox.pacer.forget(job.id)

    # -- the flow ------------------------------------------------------------------

    async def _handle(self, job: Job) -> None:
        if job.incident_id is None:
            return
        event_id = int(job.payload["event_id"])
        incident = await self.store.get_incident(job.incident_id, timeline=False)
        event = next(
            (
                e
                for e in await self.store.events(incident.id, after=event_id - 1)
                if e.id == event_id
            ),
            None,
        )
        if event is None:
            return
        state = post_of(incident)
        if state is None:
            if incident.status is Status.RESOLVED:
                return  # never announced; announcing it resolved helps nobody
            posted = await self._first_post(job, incident)
            if event.kind == EventKind.PLAYBOOK:  # matched before the first post went out
                latest = await self.store.get_incident(incident.id, timeline=False)
                await self._runbook(job, latest, posted)
            return
        link = None
        if event.kind == EventKind.REOPENED and event.data.get("new_incident_id"):
            link = await self._permalink_of(int(event.data["new_incident_id"]))
        reply = event_reply(event, incident, new_incident_link=link)
        if reply:
            await self._reply(job, incident, state, event, reply)
        await self.refresh(incident, state, job_id=job.id)
        if event.kind == EventKind.PLAYBOOK:
            await self._runbook(job, incident, state)
        await self._follow_up(incident, state, event)

    async def _runbook(self, job: Job, incident: Incident, state: SlackPost) -> None:
        """The matched playbook's runbook and checklist, once, in the incident's thread."""
        playbook = self.features.playbook(incident.playbook)
        if playbook is None or state.rollup_ts:
            return  # no thread of its own in a storm roll-up: the runbook command serves
        text = runbook_reply(playbook, self.links)
        if text is not None:
            key, tag = f"slack:runbook:{incident.id}", f"{incident.key}#runbook"
            await self.reply_once(job, incident, state, key, tag, text)

    async def _first_post(self, job: Job, incident: Incident) -> SlackPost:
        """Post the incident's message (once, across retries) and record where it is."""
        channel = self.router.channel_for(incident)
        thread_ts = None
        async with self.storms.lock(channel):
            admission = await self.storms.admit(channel, incident.id)
            if admission.threaded:
                thread_ts = await self._ensure_rollup(job, channel, admission.state)
        rendered = await self.render(incident, rollup_ts=thread_ts)
        intent = posting_of(incident)
        started = intent.since if intent is not None and intent.channel == channel else None

        async def remember(now: float) -> None:
            data = {"slack_posting": PostingIntent(channel=channel, since=now).dump()}
            await self.store.update_incident(incident.id, now=now, data=data)

        ts, answer = await self._post_once(
            channel,
            incident.key,
            thread_ts=thread_ts,
            started=started,
            remember=remember,
            text=rendered.text,
            blocks=rendered.blocks,
            job_id=job.id,
        )
        channel_id = channel
        if answer is None:
            log.info("incident #%d: found its Slack message %s after a restart", incident.id, ts)
        else:
            channel_id = str(answer.get("channel") or channel)
        state = SlackPost(
            channel=channel_id,
            ts=ts,
            thread_ts=thread_ts or ts,
            rollup_ts=thread_ts,
            permalink=None,
            posted_at=self.clock.now(),
        )
        await self.store.update_incident(
            incident.id, now=self.clock.now(), data={"slack": state.dump()}
        )
        state.permalink = await self.outbox.permalink(channel_id, ts)
        updated = await self.store.update_incident(
            incident.id, now=self.clock.now(), data={"slack": state.dump()}
        )
        await self._remember_digest(incident.id, rendered.digest())
        log.info("incident #%d posted to Slack %s (%s)", incident.id, channel_id, ts)
        if thread_ts:
            await self.schedule_rollup(channel_id, thread_ts)
        else:
            await self.followups.remind(updated, state)
            if self.settings.graphs and self.features.pipeline is None:
                await self._schedule_graph(updated)
        return state

    async def _latest(self, incident: Incident) -> Incident:
        return await self.store.get_incident(incident.id, timeline=False)

    async def render(self, incident: Incident, *, rollup_ts: str | None = None) -> Rendered:
        """The incident's message from its current state."""
        posted = post_of(incident)
        if rollup_ts is None and posted is not None:
            rollup_ts = posted.rollup_ts
        previous = None
        if incident.previous_id is not None:
            previous = (incident.previous_id, await self._permalink_of(incident.previous_id))
        mentions = self.settings.mentions.get(incident.severity, [])
        extras = Extras(
            mentions=() if rollup_ts else tuple(mentions),
            previous=previous,
            playbook_links=self.features.playbook_links(incident),
            can_rerun=self.features.can_rerun(),
            can_approve=self.features.can_approve(),
            alertmanager_url=self.alertmanager_url,
            max_silence=self.settings.max_silence,
            links=self.links,
        )
        return incident_message(incident, extras)

    async def refresh(
        self, incident: Incident, state: SlackPost, *, job_id: int | None = None
    ) -> None:
        """Re-render the message from current state; skip the call when nothing changed."""
        current = await self._latest(incident)
        rendered = await self.render(current)
        digest = hashlib.sha256(rendered.digest().encode()).hexdigest()
        key = f"slack:digest:{incident.id}"
        if await self.store.kv_get(key, self.clock.now()) == digest:
            return
        await self.outbox.update(
            state.channel,
            state.ts,
            text=rendered.text,
            blocks=rendered.blocks,
            job_id=job_id,
        )
        await self.store.kv_set(key, digest, now=self.clock.now(), ttl=KV_TTL)

    async def _remember_digest(self, incident_id: int, raw: str) -> None:
        digest = hashlib.sha256(raw.encode()).hexdigest()
        await self.store.kv_set(
            f"slack:digest:{incident_id}", digest, now=self.clock.now(), ttl=KV_TTL
        )

    async def _reply(
        self, job: Job, incident: Incident, state: SlackPost, event: Event, text: str
    ) -> None:
        """One thread reply per timeline event."""
        await self.reply_once(
            job, incident, state, f"slack:reply:{event.id}", f"{incident.key}#{event.id}", text
        )

    async def reply_once(
        self,
        job: Job,
        incident: Incident,
        state: SlackPost,
        key: str,
        tag: str,
        text: str,
    ) -> None:
        """A reply in the incident's thread, posted once as the incident's message is (see
        ``_post_once``): ``key`` is where its record is kept, ``tag`` what finds it again."""
        found = ReplyPost.load(await self.store.kv_get(key, self.clock.now()))
        if found is not None and found.ts is not None:
            return  # posted: its ts is stored

        async def remember(now: float) -> None:
            await self.store.kv_set(key, ReplyPost(started=now).dump(), now=now, ttl=KV_TTL)

        if state.rollup_ts:
            text = f"*#{incident.id}* · {text}"
        ts, answer = await self._post_once(
            state.channel,
            tag,
            thread_ts=state.thread,
            started=None if found is None else found.started,
            remember=remember,
            text=text,
            job_id=job.id,
        )
        if answer is None:
            log.info("incident #%d: found its reply %s after a restart", incident.id, ts)
        await self.store.kv_set(key, ReplyPost(ts=ts).dump(), now=self.clock.now(), ttl=KV_TTL)

    async def _post_once(
        self,
        channel: str,
        tag: str,
        *,
        thread_ts: str | None,
        started: float | None,
        remember: Callable[[float], Awaitable[None]],
        text: str,
        blocks: list[JsonDict] | None = None,
        job_id: int,
    ) -> tuple[str, JsonDict | None]:
        """Post a tagged message that a retry does not post twice: its ts, and Slack's
        answer (None: an earlier attempt's post was found).

        The intent is recorded (``remember``) before the post. If the process dies after
        Slack took the post but before its ts is stored, or the answer is lost, the retry
        (``started``: when the earlier attempt recorded its intent) looks for the tagged
        message from then on, with room for clock skew, instead of posting again."""
        if started is not None:
            found = await self.outbox.find_tagged(
                channel, tag, since=started - CLOCK_SKEW, thread_ts=thread_ts
            )
            if found is not None:
                return found, None
        else:
            await remember(self.clock.now())
        answer = await self.outbox.post(
            channel, text=text, blocks=blocks, thread_ts=thread_ts, job_id=job_id, tag=tag
        )
        return str(answer["ts"]), answer

    async def _follow_up(self, incident: Incident, state: SlackPost, event: Event) -> None:
        if state.rollup_ts and event.kind in _ROLLUP_EVENTS:
            await self.schedule_rollup(state.channel, state.rollup_ts)
        if event.kind == EventKind.SEVERITY:  # raised to a severity that gets reminders
            await self.followups.remind(await self._latest(incident), state)
        elif event.kind == EventKind.RESOLVED:
            await self.followups.resolved(incident, state)
        if event.kind == EventKind.PLAYBOOK and self.settings.graphs and not state.rollup_ts:
            await self._schedule_graph(incident)

    async def _permalink_of(self, incident_id: int) -> str | None:
        try:
            other = await self.store.get_incident(incident_id, timeline=False)
        except NotFound:
            return None
        return permalink_of(other)

    async def _schedule_graph(self, incident: Incident) -> None:
        await self.store.enqueue_job(
            GRAPH_KIND,
            f"{GRAPH_KIND}:{incident.id}",
            due_at=self.clock.now(),
            incident_id=incident.id,
        )

    # -- the storm roll-up -----------------------------------------------------------

    async def _ensure_rollup(self, job: Job, channel: str, state: StormState) -> str:
        """The roll-up's ts, posting it first if this storm has none yet (lock held)."""
        if state.rollup_ts:
            return state.rollup_ts
        members, links = await self._rollup_members(state.listed)
        rendered = rollup_message(members, links, window=self.storms.window)
        answer = await self.outbox.post(
            channel, text=rendered.text, blocks=rendered.blocks, job_id=job.id
        )
        state.rollup_ts = str(answer["ts"])
        state.rollup_channel = str(answer.get("channel") or channel)
        await self.storms.save(channel, state)
        log.warning(
            "alert storm in %s: %d incidents within %gs, rolling up",
            channel,
            len(state.listed),
            self.storms.window,
        )
        return state.rollup_ts

    async def _rollup_members(
        self, listed: Sequence[int]
    ) -> tuple[list[IncidentBrief], dict[int, str | None]]:
        """A storm's incidents as the roll-up lists them, and the links of those it names.
        A storm has hundreds: they are read as a few columns each, in one query."""
        members = await self.store.incident_briefs(listed)
        links = {i.id: await self._permalink_of(i.id) for i in members[:ROLLUP_SHOWN]}
        return members, links

    async def schedule_rollup(self, channel: str, rollup_ts: str) -> None:
        """At most one roll-up update per ``rollup_debounce`` seconds."""
        now = self.clock.now()
        bucket = int(now // self.rollup_debounce)
        await self.store.enqueue_job(
            ROLLUP_KIND,
            f"{ROLLUP_KIND}:{rollup_ts}:{bucket}",
            due_at=(bucket + 1) * self.rollup_debounce,
            payload={"channel": channel, "ts": rollup_ts},
        )

    async def update_rollup(self, job: Job) -> None:
        """Re-render the roll-up's list in place."""
        ts = str(job.payload["ts"])
        channel, listed = await self.storms.rollup_members(ts)
        if channel is None:
            return
        members, links = await self._rollup_members(listed)
        rendered = rollup_message(members, links, window=self.storms.window)
        digest = hashlib.sha256(rendered.digest().encode()).hexdigest()
        key = f"slack:digest:rollup:{ts}"
        if await self.store.kv_get(key, self.clock.now()) == digest:
            return
        await self.outbox.update(
            channel, ts, text=rendered.text, blocks=rendered.blocks, job_id=job.id
        )
        await self.store.kv_set(key, digest, now=self.clock.now(), ttl=KV_TTL)
