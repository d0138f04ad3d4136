"""What the incident's thread asks of people besides events: status updates while it is
open, a postmortem once it is over.

    notify.slack.reminder    every ``response.reminder_every`` (15m) from opened_at, for
                             ``response.reminder_severities`` (P0, P1) until resolved: a
                             reply asking for a status update; the next one is a new job
    notify.slack.postmortem  once, when such an incident (``postmortem_severities``)
                             resolves: a postmortem draft built from the timeline

Both are jobs (durable, each reply posted once). Resolving cancels the pending reminder.
The storm roll-up stands in for per-incident posts, and reminders must not add to the
flood: an incident posted in a roll-up's thread gets neither reminders nor a draft, and
while its channel is in a storm the reminders of its other incidents are skipped (the
next one is still scheduled).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.core.durations import format_duration
from bot.core.incidents import Incident, Status
from bot.records.slack import SlackPost, post_of
from bot.records.targets import targets_of
from bot.settings import ResponseSettings
from bot.slack.mrkdwn import escape
from bot.slack.postmortem import postmortem_draft
from bot.slack.render import when
from bot.store.base import IncidentChange, Job

if TYPE_CHECKING:
    from bot.slack.notifier import SlackNotifier

log = logging.getLogger(__name__)

REMINDER_KIND = "notify.slack.reminder"
POSTMORTEM_KIND = "notify.slack.postmortem"


class SlackFollowUps:
    def __init__(self, notifier: SlackNotifier, settings: ResponseSettings) -> None:
        self.notifier = notifier
        self.settings = settings

    # scheduling (from the notify.slack job) -------------------------------------------
    def _wants_reminders(self, incident: Incident, state: SlackPost | None) -> bool:
        return (
            self.settings.reminder_every > 0
            and incident.severity in self.settings.reminder_severities
            and incident.status is not Status.RESOLVED
            and state is not None
            and not state.rollup_ts
        )

    async def remind(self, incident: Incident, state: SlackPost) -> None:
        """Schedule the next reminder (posted, or raised to a reminded severity);
        idempotent: its key is its number, counted from opened_at."""
        if not self._wants_reminders(incident, state):
            return
        every = self.settings.reminder_every
        now = self.notifier.clock.now()
        number = int(max(0.0, now - incident.opened_at) // every) + 1
        await self.notifier.store.enqueue_job(
            REMINDER_KIND,
            f"{REMINDER_KIND}:{incident.id}:{number}",
            due_at=incident.opened_at + number * every,
            incident_id=incident.id,
            payload={"number": number},
        )

    async def resolved(self, incident: Incident, state: SlackPost) -> None:
        """Stop the reminders; a postmortem draft for the severities that need one."""
        store, now = self.notifier.store, self.notifier.clock.now()
        prefix = f"{REMINDER_KIND}:{incident.id}:"
        await store.change_incident(incident.id, lambda _: IncidentChange(cancel=[prefix]), now=now)
        if incident.severity in self.settings.postmortem_severities and not state.rollup_ts:
            await store.enqueue_job(
                POSTMORTEM_KIND,
                f"{POSTMORTEM_KIND}:{incident.id}",
                due_at=now,
                incident_id=incident.id,
            )

    # the jobs -----------------------------------------------------------------------
    async def reminder_job(self, job: Job) -> None:
        if job.incident_id is None:
            return
        store = self.notifier.store
        incident = await store.get_incident(job.incident_id, timeline=False)
        state = post_of(incident)
        if state is None or not self._wants_reminders(incident, state):
            return  # resolved (or never posted): no more reminders
        number = int(job.payload.get("number", 1))
        if await self._storming(state.channel):
            log.info(
                "incident #%d: reminder %d skipped: its channel is in a storm", incident.id, number
            )
        else:
            await self.notifier.reply_once(
                job,
                incident,
                state,
                f"slack:reminder:{incident.id}:{number}",
                f"{incident.key}#reminder-{number}",
                reminder_text(incident, self.settings.reminder_every, self.notifier.clock.now()),
            )
        await self.remind(incident, state)

    async def _storming(self, channel: str) -> bool:
        storms = self.notifier.storms
        storm = await storms.load(channel)
        return bool(storm.listed) and self.notifier.clock.now() - storm.last_new <= storms.window

    async def postmortem_job(self, job: Job) -> None:
        if job.incident_id is None:
            return
        incident = await self.notifier.store.get_incident(job.incident_id, timeline=True)
        state = post_of(incident)
        if state is None:
            return
        await self.notifier.reply_once(
            job,
            incident,
            state,
            f"slack:postmortem:{incident.id}",
            f"{incident.key}#postmortem",
            postmortem_draft(incident),
        )


def reminder_text(incident: Incident, every: float, now: float) -> str:
    """The reminder: how long it has been open, where it stands, what to post."""
    where = (
        f"acknowledged by {escape(incident.acknowledged_by or 'someone')}"
        if incident.status is Status.ACKNOWLEDGED
        else "not acknowledged yet"
    )
    resolve_by = targets_of(incident).resolve_by
    due = f"; resolve by {when(resolve_by)}" if resolve_by is not None else ""
    return (
        f":hourglass_flowing_sand: *Status update due*: #{incident.id} has been open for"
        f" {format_duration(max(0.0, now - incident.opened_at))} ({incident.severity.value},"
        f" {where}{due}). Post what is known, what is being done and when the next update"
        f" comes. Next reminder in {format_duration(every)}."
    )
