"""What the Slack feature keeps: the incident's message, and its posting records.

- ``incident.data["slack"]`` (``SlackPost``): where the incident's message is; PagerDuty's
  payload links it, access checks read its channel;
- ``incident.data["slack_posting"]`` (``PostingIntent``): the first post's intent, written
  before the call, so that a retry looks for the message instead of posting it twice;
- ``slack:reply:<event id>``, ``slack:runbook:<id>``, ``slack:reminder:<id>:<n>``,
  ``slack:postmortem:<id>`` in the key-value table (``ReplyPost``): a thread reply's
  intent, then its ts;
- ``slack:storm:<channel>`` (``StormState``) and ``slack:rollup:<ts>`` (``RollupMembers``):
  the storm roll-up (``bot.slack.storm``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pydantic import Field

from bot.core.incidents import Incident
from bot.records.base import Stored, loaded, record_of

log = logging.getLogger(__name__)

LEGACY_POSTING = "posting since "  # how a reply's intent was written before ReplyPost


class SlackPost(Stored):
    """``incident.data["slack"]``: the incident's message in Slack."""

    channel: str = ""
    ts: str = ""  # empty: not posted
    thread_ts: str | None = None  # where replies go: its own ts, or the roll-up's
    rollup_ts: str | None = None  # posted in a storm roll-up's thread
    permalink: str | None = None
    posted_at: float | None = None

    @property
    def thread(self) -> str:
        return self.thread_ts or self.ts


class PostingIntent(Stored):
    """``incident.data["slack_posting"]``: the first post was begun in ``channel`` at
    ``since`` (a retry looks for the tagged message from then on)."""

    channel: str
    since: float


def post_of(incident: Incident) -> SlackPost | None:
    """The incident's Slack message; None when it has not been posted (or the record is
    unreadable)."""
    post = record_of(incident, "slack", SlackPost)
    return post if post is not None and post.channel and post.ts else None


def permalink_of(incident: Incident) -> str | None:
    """The link to the incident's Slack message, when there is one."""
    post = record_of(incident, "slack", SlackPost)
    return post.permalink if post is not None and post.permalink else None


def posting_of(incident: Incident) -> PostingIntent | None:
    return record_of(incident, "slack_posting", PostingIntent)


@dataclass(frozen=True)
class ReplyPost:
    """A thread reply's record in the key-value table: posting since ``started`` (the
    intent, written before the call), then posted as ``ts`` (Slack's answer)."""

    ts: str | None = None
    started: float | None = None

    def dump(self) -> str:
        return json.dumps({"ts": self.ts, "started": self.started})

    @classmethod
    def load(cls, raw: str | None) -> ReplyPost | None:
        """The record as written by this version or an earlier one (``posting since
        <time>``, or a ts on its own); None when there is none or it is unreadable (the
        reply is then posted as if never begun)."""
        if raw is None:
            return None
        if raw.startswith("{"):
            found = loaded(raw, _ReplyRecord, what=f"Slack reply record {raw[:60]!r}")
            return None if found is None else cls(ts=found.ts, started=found.started)
        if raw.startswith(LEGACY_POSTING):
            try:
                return cls(started=float(raw.removeprefix(LEGACY_POSTING)))
            except ValueError:
                log.warning("unreadable Slack reply record %r, left out", raw[:60])
                return None
        return cls(ts=raw)  # a ts on its own, as written before


class _ReplyRecord(Stored):
    ts: str | None = None
    started: float | None = None


class StormState(Stored):
    """``slack:storm:<channel>``: the channel's recent new incidents and its roll-up."""

    recent: list[tuple[int, float]] = Field(default_factory=list)  # (incident id, first seen)
    listed: list[int] = Field(default_factory=list)  # incidents the roll-up lists
    threaded: list[int] = Field(default_factory=list)  # incidents posted in its thread
    rollup_ts: str | None = None
    rollup_channel: str | None = None
    last_new: float = 0.0

    @classmethod
    def load(cls, raw: str | None) -> StormState:
        """The stored state; a fresh one (no storm) when there is none or it is unreadable."""
        return loaded(raw, cls, what="Slack storm state") or cls()


class RollupMembers(Stored):
    """``slack:rollup:<ts>``: the roll-up's channel and the incidents it lists."""

    channel: str | None = None
    listed: list[int] = Field(default_factory=list)

    @classmethod
    def load(cls, raw: str | None) -> RollupMembers:
        return loaded(raw, cls, what="Slack roll-up members") or cls()
