"""Silences asked for in Slack (or in the console, ``source="console"``): one Alertmanager
silence per firing alert of the incident, on that alert's whole label set, after
Alertmanager said they reach no alert outside the incident (``bot.silences.scope``);
recorded through the silence service (``bot.silences.service``) with a note on the
timeline. A refusal is told to the person and noted on the timeline; nothing is silenced
then. "Until resolved" silences are expired by the service's ``silences`` subscriber when
the incident resolves; Alertmanager needs an end all the same, and it is no later than
``slack.max_silence``, so "until resolved" cannot outlast the cap a duration has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from bot.core.clock import Clock
from bot.core.durations import format_duration
from bot.core.incidents import EventKind, Incident, Status, TransitionError
from bot.silences.scope import AlertSilence, SilenceRefused, as_labels, describe, plan
from bot.silences.service import NewSilence, SilenceService
from bot.slack.mrkdwn import clip, escape
from bot.store.base import NewEvent, Store
from bot.upstream.alertmanager import AlertmanagerClient, AlertmanagerError

log = logging.getLogger(__name__)

UNTIL_RESOLVED = "resolved"
UNTIL_RESOLVED_LIMIT = 7 * 86400.0  # Alertmanager needs an end; resolving ends it sooner
MIN_SILENCE = 60.0

Asker = Literal["slack", "console"]
_WHERE: dict[Asker, str] = {"slack": "Slack", "console": "the console"}


class Silencer:
    def __init__(
        self,
        store: Store,
        alertmanager: Callable[[], AlertmanagerClient],
        clock: Clock,
        silences: SilenceService,
        *,
        max_silence: float = UNTIL_RESOLVED_LIMIT,
    ) -> None:
        self.store = store
        self.alertmanager = alertmanager
        self.clock = clock
        self.silences = silences
        self.until_resolved_limit = min(UNTIL_RESOLVED_LIMIT, max_silence)

    async def silence(
        self, incident_id: int, choice: float | str, *, actor: str, source: Asker = "slack"
    ) -> str:
        """Silence the incident's firing alerts for ``choice`` seconds or until resolved;
        what the person is told (mrkdwn). ``source``: where they asked, for the records."""
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED:
            raise TransitionError(f"incident #{incident_id} is resolved; nothing to silence")
        until_resolved = choice == UNTIL_RESOLVED
        seconds = self.until_resolved_limit if until_resolved else float(choice)
        label = (
            f"until resolved or for {format_duration(seconds)} at most"
            if until_resolved
            else f"for {format_duration(seconds)}"
        )
        am = self.alertmanager()
        try:
            wanted = await plan(am, incident)
        except SilenceRefused as exc:
            return await self._refused(incident, actor, str(exc), source)
        now = self.clock.now()
        ends = datetime.fromtimestamp(now + seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
        made: list[NewSilence] = []
        failure: AlertmanagerError | None = None
        try:
            for matchers in wanted:
                silence_id = await am.create_silence(
                    matchers,
                    duration=seconds,
                    created_by=actor,
                    comment=f"alertpilot incident #{incident.id} ({incident.title}), "
                    f"silenced in {_WHERE[source]}",
                    now=datetime.fromtimestamp(now, UTC),
                )
                made.append(
                    NewSilence(
                        id=silence_id,
                        source=source,
                        expire_on_resolve=until_resolved,
                        by=actor,
                        url=am.silence_url(silence_id),
                        until=ends,
                        matchers=[str(m) for m in matchers],
                    )
                )
        except AlertmanagerError as exc:
            if not made:
                raise
            failure = exc  # what was made is recorded, so it is expired like the rest
        finally:
            if made:
                note = _note(made, wanted[0], label, actor, seconds, source)
                await self.silences.record_all(incident_id, made, events=[note])
        ids = ", ".join(s.id for s in made)
        if failure is not None:
            return (
                f":warning: Silenced {len(made)} of the {len(wanted)} alerts of #{incident_id} "
                f"{label} (silences {ids}); then {escape(clip(str(failure), 300))}"
            )
        if len(made) == 1:
            return f"Silenced #{incident_id} {label} (silence {ids})"
        return f"Silenced #{incident_id} {label}: {len(made)} alerts, one silence each ({ids})"

    async def _refused(self, incident: Incident, actor: str, reason: str, source: Asker) -> str:
        await self.store.append_event(
            incident.id,
            actor=actor,
            kind=EventKind.NOTE,
            message=f"{actor} asked in {_WHERE[source]} to silence #{incident.id}: refused, "
            f"{reason}",
            now=self.clock.now(),
            data={"source": source, "refused": "silence"},
            notify=False,
        )
        log.warning("incident #%d: silence refused: %s", incident.id, reason)
        return f":no_entry: Nothing was silenced: {escape(reason)}."


def _note(
    made: Sequence[NewSilence],
    first: AlertSilence,
    label: str,
    actor: str,
    seconds: float,
    source: Asker,
) -> NewEvent:
    ids, where = [s.id for s in made], _WHERE[source]
    if len(made) == 1:
        shown = describe(as_labels(first))
        what = f"silenced {shown} {label} by {actor} in {where} (Alertmanager silence {ids[0]})"
    else:
        what = (
            f"silenced {len(made)} alerts {label} by {actor} in {where}, one Alertmanager "
            f"silence each ({', '.join(ids)})"
        )
    return NewEvent(
        actor=actor,
        kind=EventKind.NOTE,
        message=what,
        data={"source": source, "silence_ids": ids, "seconds": seconds},
    )
