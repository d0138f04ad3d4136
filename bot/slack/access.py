"""Who may do what from Slack, so that being in the workspace is not enough to act on
every incident.

An incident belongs to the channel its message was posted to (``incident.data["slack"]
["channel"]``), or, before it is posted, the channel ``slack.routes`` picks for it. Anyone
in that channel may show, acknowledge, resolve, escalate, silence and re-run it: the
channel is the incident's room, and whoever can read the message there may answer it.
From anywhere else (another channel, a direct message) only ``slack.responders`` may:
user IDs, or members of user groups read through ``usergroups.users.list`` and cached.
``list`` shows others the incidents of the channel they ask in.

``query`` runs ad-hoc PromQL against Prometheus, whose metrics may say more than any
incident, so it is open only to ``slack.query_users`` and in ``slack.query_channels``,
and to nobody when both are empty. A silence lasts at most ``slack.max_silence``, "until
resolved" included. Approvals keep their own rule (``slack.approvers``).

A refusal raises ``Refused``; whoever catches it answers the user privately and calls
``log_refusal``, one structured line with the user, channel, command and incident.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bot.core.durations import format_duration
from bot.core.incidents import Incident
from bot.errors import ActionRefused
from bot.records.slack import post_of
from bot.settings import SlackSettings
from bot.slack.members import Members
from bot.slack.notifier import SlackRouter

log = logging.getLogger(__name__)

# what each command does to an incident, as a refusal says it
VERBS = {
    "show": "see",
    "ack": "acknowledge",
    "resolve": "resolve",
    "escalate": "escalate",
    "silence": "silence",
    "rerun": "re-run diagnostics of",
}


class Refused(ActionRefused):
    """The Slack user may not do this; ``str(exc)`` says why, to them and in the log."""


@dataclass(frozen=True)
class Caller:
    """Who asks, and from where, as Slack's signed request says."""

    user_id: str
    actor: str
    channel_id: str | None
    channel_name: str | None = None

    def is_in(self, channel: str) -> bool:
        """Whether the request came from ``channel``, named as routes name it: an ID
        (``C0123``) or ``#name``. A name is met only before the message is posted: Slack
        answers a post with the channel's ID, and that is what is kept."""
        if self.channel_id and channel == self.channel_id:
            return True
        return bool(self.channel_name) and channel == f"#{self.channel_name}"

    @property
    def where(self) -> str:
        return self.channel_id or "(no channel)"


class Access:
    def __init__(
        self,
        slack: SlackSettings,
        router: SlackRouter,
        responders: Members,
        query_users: Members,
    ) -> None:
        self.router = router
        self.responders = responders
        self.query_users = query_users
        self.query_channels = frozenset(slack.query_channels)
        self.max_silence = slack.max_silence

    def channel_of(self, incident: Incident) -> str:
        """Where the incident's message is, or will be posted."""
        posted = post_of(incident)
        return posted.channel if posted is not None else self.router.channel_for(incident)

    def in_channel(self, caller: Caller, incident: Incident) -> bool:
        return caller.is_in(self.channel_of(incident))

    async def responder(self, caller: Caller) -> bool | None:
        """Whether the caller is in ``slack.responders``; ``None`` when that is unknown."""
        if self.responders.empty:
            return False
        return await self.responders.contains(caller.user_id)

    async def incident(self, caller: Caller, incident: Incident, command: str) -> None:
        """Raise ``Refused`` unless the caller may act on ``incident`` from where they are."""
        if self.in_channel(caller, incident):
            return
        found = await self.responder(caller)
        if found:
            return
        verb = VERBS.get(command, command)
        if found is None:
            raise Refused(
                f"You cannot {verb} #{incident.id} from here: membership of the responders "
                "group (slack.responders) could not be checked; try again, or use the "
                "incident's own channel."
            )
        raise Refused(
            f"You cannot {verb} #{incident.id} from here: an incident is handled in its own "
            "channel, and only responders (slack.responders) may act on it from elsewhere."
        )

    async def query(self, caller: Caller) -> None:
        """Raise ``Refused`` unless ad-hoc PromQL is open to the caller where they are."""
        if self.query_users.empty and not self.query_channels:
            raise Refused(
                "`query` is off: ad-hoc PromQL is open only to slack.query_users and in "
                "slack.query_channels, and neither is configured."
            )
        if caller.channel_id in self.query_channels:
            return
        found = await self.query_users.contains(caller.user_id)
        if found:
            return
        if found is None:
            raise Refused(
                "`query` could not be allowed: membership of slack.query_users could not be "
                "checked; try again."
            )
        raise Refused(
            "`query` is not open to you here: ad-hoc PromQL is for slack.query_users, "
            "and in slack.query_channels."
        )

    def silence(self, seconds: float) -> None:
        """Raise ``Refused`` for a silence longer than ``slack.max_silence``."""
        if seconds > self.max_silence:
            cap = format_duration(self.max_silence)
            raise Refused(
                f"A silence from Slack lasts at most {cap} (slack.max_silence): ask for {cap} "
                "or less, or silence in Alertmanager itself."
            )


def log_refusal(caller: Caller, command: str, incident_id: int | None, why: str) -> None:
    """One line per refusal, with its fields apart for a JSON log (``logging.format: json``)."""
    fields: dict[str, Any] = {
        "slack_user": caller.user_id,
        "slack_channel": caller.where,
        "command": command,
        "incident": incident_id,
        "refused": why,
    }
    log.warning(
        "slack %s refused: user %s in channel %s, incident %s: %s",
        command,
        caller.actor,
        caller.where,
        "-" if incident_id is None else f"#{incident_id}",
        why,
        extra=fields,
    )
