"""Narrative jobs: never on the ack path, always a narrative.

    narrative        subscriber: every timeline event. On ``incident.opened`` the template
                     narrative is stored at once (Slack announces it); when facts change
                     (diagnostics done, a remediation outcome, resolved, no playbook) a
                     ``narrative.llm`` job is asked for, or the template is re-rendered.
                     Other kinds, including its own ``narrative`` events, are ignored.
    narrative.llm    writes the LLM narrative (or the template, when the LLM cannot) and
                     records a ``narrative`` event, so notifiers update the message.
                     Debounced: one job covers every event before it runs.
    narrative.storm  more than ``llm.storm_threshold`` incidents opened within
                     ``llm.storm_window``: one summary, written to every incident of it.

``incident.data["narrative"]`` (``NarrativeRecord``, ``bot.records.narrative``) holds text,
source, audience, generated_at, model, tokens, ``based_on`` (the last event id the
narrative knew) and, in a storm, ``storm``.
"""

from __future__ import annotations

import asyncio
import logging

from bot.core.incidents import Event, EventKind, Incident, Status
from bot.errors import PermanentFailure
from bot.narrative.narrator import Narrative, Narrator
from bot.narrative.storm import StormIncident, storm_facts, storm_row
from bot.narrative.templates import PromptTemplateError
from bot.records.narrative import (
    STORM_KEY,
    SUMMARY_PREFIX,
    NarrativeRecord,
    StormRef,
    active_storm,
    narrative_of,
    storm_summary,
)
from bot.runtime.locks import KeyedLocks, both
from bot.store.base import IncidentChange, Job, NewEvent

log = logging.getLogger(__name__)

SUBSCRIBER = "narrative"
LLM_JOB = "narrative.llm"
STORM_JOB = "narrative.storm"
STORM_LIMIT = 1000  # incidents one storm summary covers at most (the newest)
STORM_PAGE = 100
_BY_DESIGN = frozenset({"", "deferred", "provider"})  # template reasons that are no fault
_SKIPPED = frozenset(
    {"budget_exhausted", "breaker_open", "prompt_too_large", "prompt_timeout"}
)  # not called
OUTCOMES = frozenset(
    {
        "succeeded", "success", "verified", "fixed", "done", "failed", "error", "not_fixed",
        "verify_failed", "timed_out", "rolled_back", "rejected", "skipped", "expired",
        "suggested", "dry_run", "cancelled",
    }
)  # fmt: skip


def _changes_facts(event: Event) -> bool:
    """Events after which the narrative has something new to say."""
    if event.kind in (EventKind.DIAGNOSTICS_DONE, EventKind.RESOLVED):
        return True
    if event.kind == EventKind.PLAYBOOK:
        return not event.data.get("playbooks")  # none matched: no diagnostics will come
    if event.kind == EventKind.REMEDIATION:
        state = event.data.get("state") or event.data.get("status")
        return isinstance(state, str) and state.lower() in OUTCOMES
    return event.kind == EventKind.ACKNOWLEDGED


EVENTS_OF_INTEREST = frozenset(
    {
        EventKind.OPENED,
        EventKind.DIAGNOSTICS_DONE,
        EventKind.RESOLVED,
        EventKind.PLAYBOOK,
        EventKind.REMEDIATION,
        EventKind.ACKNOWLEDGED,
    }
)
"""The timeline events a narrative is written or rewritten for."""


class NarrativeJobs:
    def __init__(self, narrator: Narrator) -> None:
        self.narrator = narrator
        self.store = narrator.store
        self.clock = narrator.clock
        self.settings = narrator.settings
        self._storm_lock = asyncio.Lock()
        # the debounced and the fallback job may fall due together
        self._llm_locks = KeyedLocks(self.store.hold, "narrative")

    # the subscriber ----------------------------------------------------------------

    async def on_event(self, job: Job) -> None:
        kind, event_id = job.payload.get("kind"), job.payload.get("event_id")
        if job.incident_id is None or not isinstance(event_id, int):
            return
        if kind == EventKind.OPENED:
            await self._opened(job.incident_id, event_id)
            return
        if kind not in EVENTS_OF_INTEREST:
            return
        incident = await self.store.get_incident(job.incident_id)
        event = next((e for e in incident.timeline if e.id == event_id), None)
        if event is None or not _changes_facts(event):
            return
        current = narrative_of(incident)
        if current is not None and current.storm is not None:
            return  # the storm summary stands for this incident
        if self.narrator.llm is None or event.kind == EventKind.ACKNOWLEDGED:
            await self._refresh_template(incident, current)
            return
        await self.store.enqueue_job(
            LLM_JOB,
            f"{LLM_JOB}:{incident.id}:{event_id}",
            due_at=self.clock.now() + self.settings.settle,
            incident_id=incident.id,
            payload={"after": event_id},
        )

    async def _opened(self, incident_id: int, event_id: int) -> None:
        incident = await self.store.get_incident(incident_id)
        storm = await self._join_storm(incident)
        if storm is not None:
            raw = await self.store.kv_get(SUMMARY_PREFIX + storm.key, self.clock.now())
            summary = storm_summary(raw)
            if summary is not None:  # a late arrival: the storm is already summarised
                await self._save(incident.id, summary.with_storm(storm), event_id)
                return
        record = _record(await self._template(incident))
        await self._save(
            incident.id, record if storm is None else record.with_storm(storm), event_id
        )
        if storm is not None:
            await self.store.enqueue_job(
                STORM_JOB,
                f"{STORM_JOB}:{storm.key}",
                due_at=self.clock.now() + self.settings.storm_settle,
                payload={"storm": storm.key, "since": storm.since},
            )
        elif self.narrator.llm is not None:
            # A safety net for incidents whose pipeline never reports (no playbook feature,
            # a stuck diagnostic): the LLM narrative comes after this delay at the latest.
            # Not attached to the incident, so it holds up no earlier-due job of its kind.
            await self.store.enqueue_job(
                LLM_JOB,
                f"{LLM_JOB}:{incident.id}:{event_id}",
                due_at=self.clock.now() + self.settings.llm_fallback_delay,
                payload={"incident": incident.id, "after": event_id},
            )

    async def _template(self, incident: Incident) -> Narrative:
        try:
            return await self.narrator.for_incident(incident, "engineer", use_llm=False)
        except PromptTemplateError as exc:
            raise PermanentFailure(f"narrative template: {exc}") from exc

    async def _refresh_template(self, incident: Incident, current: NarrativeRecord | None) -> None:
        narrative = await self._template(incident)
        old = current or NarrativeRecord()
        if old.text == narrative.text and old.source == "template":
            return
        await self._save(incident.id, _record(narrative), _last_event(incident))

    # the LLM narrative -------------------------------------------------------------

    async def on_llm(self, job: Job) -> None:
        incident_id = job.incident_id or job.payload.get("incident")
        if not isinstance(incident_id, int):
            return
        async with self._llm_locks(incident_id):  # the second sees the first's narrative
            await self._llm(job, incident_id)

    async def _llm(self, job: Job, incident_id: int) -> None:
        incident = await self.store.get_incident(incident_id)
        current = narrative_of(incident) or NarrativeRecord()
        after = job.payload.get("after", 0)
        if current.storm is not None or await self._in_storm(incident):
            return
        if current.source == "llm" and (current.based_on or 0) >= int(after):
            return  # an earlier job already wrote from a timeline that included this event
        try:
            narrative = await self.narrator.for_incident(incident, "engineer")
        except PromptTemplateError as exc:
            raise PermanentFailure(f"narrative template: {exc}") from exc
        same = (narrative.text, narrative.source, narrative.reason)
        if same == (current.text, current.source, current.reason):
            return  # nothing new; a changed reason (the LLM failed) is news for the timeline
        await self._save(incident.id, _record(narrative), _last_event(incident))

    # storms ------------------------------------------------------------------------

    async def _active_storm(self) -> StormRef | None:
        return active_storm(await self.store.kv_get(STORM_KEY, self.clock.now()))

    async def _in_storm(self, incident: Incident) -> bool:
        storm = await self._active_storm()
        return storm is not None and incident.opened_at >= storm.since

    async def _join_storm(self, incident: Incident) -> StormRef | None:
        """The storm this incident belongs to (starting one if it tips the count), or None."""
        window, threshold = self.settings.storm_window, self.settings.storm_threshold
        now = self.clock.now()
        async with both(self._storm_lock, self.store.hold("narrative:storm")):
            storm = await self._active_storm()
            if storm is None:
                recent = await self.store.list_incidents(limit=threshold + 1)
                within = [i for i in recent if i.opened_at >= incident.opened_at - window]
                if len(within) <= threshold:
                    return None
                since = min(i.opened_at for i in within)
                storm = StormRef(key=str(incident.id), since=since)
                self.narrator.metrics.storms.inc()
                log.warning(
                    "alert storm: %d incidents opened within %.0fs; one summary for all",
                    len(within),
                    window,
                )
            # The storm lasts while incidents keep coming: each one extends it by a window.
            await self.store.kv_set(STORM_KEY, storm.dumps(), now=now, ttl=window)
            return storm

    async def on_storm(self, job: Job) -> None:
        key, since = str(job.payload.get("storm", "")), float(job.payload.get("since", 0.0))
        rows = await self._storm_rows(since)
        if not rows:
            return
        facts = storm_facts(key, self.settings.storm_window, rows)
        ids = [row.id for row in rows]
        try:
            narrative = await self.narrator.for_storm(facts, ids)
        except PromptTemplateError as exc:
            raise PermanentFailure(f"storm template: {exc}") from exc
        record = _record(narrative)
        await self.store.kv_set(
            SUMMARY_PREFIX + key,
            record.dumps(),
            now=self.clock.now(),
            ttl=2 * self.settings.storm_window,
        )
        storm = StormRef(key=key, since=since, incidents=len(ids))
        for incident_id in ids:
            await self._save(incident_id, record.with_storm(storm), None)

    async def _storm_rows(self, since: float) -> list[StormIncident]:
        """The unresolved incidents among the newest ``STORM_LIMIT`` opened since ``since``,
        read a page at a time: in a storm there are hundreds, each with its alerts and
        data, and only a few fields of each are needed."""
        rows: list[StormIncident] = []
        before: int | None = None
        for start in range(0, STORM_LIMIT, STORM_PAGE):
            size = min(STORM_PAGE, STORM_LIMIT - start)
            page = await self.store.list_incidents(limit=size, before=before)
            rows += [
                storm_row(i)
                for i in page
                if i.opened_at >= since and i.status is not Status.RESOLVED
            ]
            if len(page) < size:
                break
            before = page[-1].id
        return rows

    # storing -----------------------------------------------------------------------

    async def _save(self, incident_id: int, record: NarrativeRecord, based_on: int | None) -> None:
        """Store the narrative and its ``narrative`` event in one transaction.

        An LLM narrative never replaces one written from a later timeline (two jobs that
        raced); anything else replaces what is there.
        """
        if based_on is not None:
            record = record.model_copy(update={"based_on": based_on})
        source, model, reason = record.source, record.model, record.reason
        what = "storm summary" if record.storm is not None else "narrative"
        by = f"{source}, {model}" if source == "llm" and model else str(source)
        if reason == "ungrounded":
            by += "; the LLM's answer was not supported by the facts"
        elif source == "template" and reason not in _BY_DESIGN:
            by += f"; LLM {'skipped' if reason in _SKIPPED else 'failed'}: {reason}"
        dropped = record.dropped
        if dropped and reason != "ungrounded":
            count = len(dropped) if record.dropped_count is None else record.dropped_count
            by += f"; {count} unsupported sentence{'s' if count != 1 else ''} dropped"
        event = NewEvent(
            actor="alertpilot",
            kind=EventKind.NARRATIVE,
            message=f"{what} updated ({by})",
            data={
                "source": source,
                "audience": record.audience,
                "model": model,
                "storm": record.storm is not None,
                "reason": reason,
                **({"dropped": dropped} if dropped else {}),
            },
        )

        def change(incident: Incident) -> IncidentChange:
            current = narrative_of(incident)
            if current is not None and based_on is not None:
                newer = (current.based_on or 0) > based_on
                if newer and current.source == "llm" and record.storm is None:
                    return IncidentChange()
            return IncidentChange(data={"narrative": record.dump()}, events=[event])

        await self.store.change_incident(incident_id, change, now=self.clock.now())


def _record(narrative: Narrative) -> NarrativeRecord:
    return NarrativeRecord.model_validate(narrative.to_data())


def _last_event(incident: Incident) -> int | None:
    return max((e.id for e in incident.timeline), default=None)
