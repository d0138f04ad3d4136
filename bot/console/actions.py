"""What the console's buttons do: the same incident actions, silencer and remediation
engine as Slack's buttons, with the signed-in person as the actor and ``console`` as
the source, so the timeline says who did it and where.

The rules are Slack's, in console terms: anyone signed in to the console may
acknowledge, resolve and silence (the console is for responders; it is off until they
are configured), a silence lasts at most ``console.max_silence``, and only
``console.approvers`` approve or reject a remediation. A refused approval is noted on
the timeline (not notified), as in Slack. Each returns the sentence the person is told.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.core.clock import Clock
from bot.core.durations import format_duration
from bot.core.incidents import Status, TransitionError
from bot.core.transitions import IncidentActions
from bot.errors import PayloadError
from bot.remediation.approvals import note_refused
from bot.remediation.engine import RemediationEngine
from bot.settings import ConsoleSettings
from bot.silences.scope import SilenceRefused
from bot.slack.silence_menu import UNTIL_RESOLVED, Silencer
from bot.store.base import Store
from bot.upstream.alertmanager import AlertmanagerError

# Silence lengths the form offers (seconds); longer than console.max_silence are left out.
SILENCE_CHOICES = (3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)
_EMOJI = re.compile(r"^:[a-z0-9_+-]+:\s*")


def silence_choices(settings: ConsoleSettings) -> list[tuple[str, str]]:
    """(value, label) pairs for the silence form."""
    out = [
        (f"{seconds:g}", format_duration(seconds))
        for seconds in SILENCE_CHOICES
        if seconds <= settings.max_silence
    ]
    return [*out, (UNTIL_RESOLVED, "until resolved")]


def plain(mrkdwn: str) -> str:
    """A Slack-worded sentence from the shared code, as plain text: no leading emoji
    code, no backticks, entities decoded (the page escapes it again)."""
    return html.unescape(_EMOJI.sub("", mrkdwn).replace("`", ""))


@dataclass
class ConsoleActions:
    settings: ConsoleSettings
    store: Store
    clock: Clock
    actions: IncidentActions
    silencer: Silencer
    remediation: Callable[[], RemediationEngine | None]

    async def acknowledge(self, incident_id: int, actor: str) -> str:
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.ACKNOWLEDGED:
            return f"#{incident_id} is already acknowledged by {incident.acknowledged_by}."
        if incident.status is Status.RESOLVED:
            return f"#{incident_id} is resolved; there is nothing to acknowledge."
        await self.actions.acknowledge(incident_id, actor=actor, source="console")
        return f"You acknowledged #{incident_id}."

    async def resolve(self, incident_id: int, actor: str) -> str:
        incident = await self.store.get_incident(incident_id, timeline=False)
        if incident.status is Status.RESOLVED:
            return f"#{incident_id} is already resolved."
        await self.actions.resolve(
            incident_id, actor=actor, source="console", reason="resolved in the console"
        )
        return f"You resolved #{incident_id}."

    async def silence(self, incident_id: int, choice: str, actor: str) -> str:
        """``choice``: seconds (at most ``console.max_silence``) or ``resolved``."""
        length: float | str = UNTIL_RESOLVED
        if choice != UNTIL_RESOLVED:
            try:
                length = float(choice)
            except ValueError:
                raise PayloadError("a silence lasts a number of seconds") from None
            if not 60.0 <= length <= self.settings.max_silence:
                cap = format_duration(self.settings.max_silence)
                return f"A silence from the console lasts 1m to {cap} (console.max_silence)."
        try:
            told = await self.silencer.silence(incident_id, length, actor=actor, source="console")
        except (AlertmanagerError, SilenceRefused) as exc:
            return f"Nothing was silenced: {exc}"
        except TransitionError as exc:
            return str(exc)
        return plain(told)

    async def decide(self, incident_id: int, step: str, *, approve: bool, actor: str) -> str:
        verb = "approve" if approve else "reject"
        engine = self.remediation()
        if engine is None:
            return "Remediation is not configured here: there is nothing to approve or reject."
        await self.store.get_incident(incident_id, timeline=False)  # NotFound for a wrong id
        if actor not in self.settings.approvers:
            why = (
                "no approvers are configured (console.approvers)"
                if not self.settings.approvers
                else "you are not an approver for remediations (console.approvers)"
            )
            await note_refused(
                self.store,
                incident_id,
                actor=actor,
                verb=verb,
                step=step,
                source="console",
                where="the console",
                why=why,
                now=self.clock.now(),
            )
            return f"You cannot {verb} remediations: {why}."
        if approve:
            await engine.approve(incident_id, step, actor=actor, source="console")
        else:
            await engine.reject(incident_id, step, actor=actor, source="console")
        return f"You {'approved' if approve else 'rejected'} {step} on #{incident_id}."
