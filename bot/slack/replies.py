"""Answering a Slack user: ack at once, do slow work afterwards, report the outcome privately."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackClientError

from bot.core.durations import format_duration, parse_duration
from bot.core.incidents import TransitionError
from bot.errors import InvalidInput, NotFound, PermanentFailure, RetryLater
from bot.slack.access import Caller
from bot.slack.mrkdwn import clip, escape
from bot.slack.silence_menu import MIN_SILENCE, UNTIL_RESOLVED
from bot.slack.state import SlackState
from bot.upstream.alertmanager import AlertmanagerError
from bot.upstream.prometheus import PrometheusError

log = logging.getLogger(__name__)

_ID = re.compile(r"^#?(\d{1,12})$")

# what a user is told plainly; anything else is a bug, logged and reported as such
EXPECTED_ERRORS = (
    NotFound,
    TransitionError,
    AlertmanagerError,
    PrometheusError,
    RetryLater,
    PermanentFailure,
    ValueError,
    LookupError,
)


class BadArguments(InvalidInput):
    """The user typed something we cannot read; answered with usage."""


def incident_id(text: str) -> int:
    match = _ID.match(text.strip())
    if match is None:
        raise BadArguments(f"{escape(clip(text, 40))!s} is not an incident id (e.g. 12 or #12)")
    return int(match.group(1))


def silence_choice(text: str) -> float | str:
    """How long a silence asked for in Slack lasts: ``UNTIL_RESOLVED``, or seconds, at
    least ``MIN_SILENCE``. The same parsing for a slash command and a menu (a menu's value
    comes back from the client and can be anything); the upper bound is
    ``slack.max_silence``, checked with the caller's other limits (``bot.slack.access``)."""
    if text.strip().lower() in (UNTIL_RESOLVED, "until-resolved"):
        return UNTIL_RESOLVED
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise BadArguments(f"{escape(clip(text, 20))!s} is not a duration") from None
    if seconds < MIN_SILENCE:
        raise BadArguments(f"a silence lasts at least {format_duration(MIN_SILENCE)}")
    return seconds


def actor_of(user: dict[str, Any]) -> str:
    """How a Slack user is named on the timeline: ``@alice (U123ABC)``."""
    user_id = str(user.get("id") or user.get("user_id") or "unknown")
    name = user.get("username") or user.get("name") or user.get("user_name") or user_id
    return f"@{name} ({user_id})"


@dataclass
class Reply:
    state: SlackState
    user_id: str
    actor: str
    channel_id: str | None
    ack: AsyncAck | None
    respond: AsyncRespond | None
    channel_name: str | None = None

    @property
    def caller(self) -> Caller:
        return Caller(self.user_id, self.actor, self.channel_id, self.channel_name)

    async def now(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Answer inside the ack (fast answers only), visible to the user alone."""
        if self.ack is not None:
            await self.ack(text=text, blocks=blocks, response_type="ephemeral")

    async def later(self, work: Awaitable[str | None], name: str) -> None:
        """Ack now; run ``work`` afterwards and send what it returns to the user alone."""
        if self.ack is not None:
            await self.ack()
        self.state.tasks.spawn(self._finish(work), name)

    async def _finish(self, work: Awaitable[str | None]) -> None:
        try:
            text = await work
        except EXPECTED_ERRORS as exc:
            text = f":warning: {escape(clip(str(exc), 500))}"
        except Exception:  # reported to the user and logged; the ack was already sent
            log.exception("slack request by %s failed", self.actor)
            text = ":x: That failed inside alertpilot; the error is in its log."
        if text:
            await self.tell(text)

    async def tell(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Answer through ``response_url``, visible to the user alone."""
        if self.respond is None:
            return
        try:
            await self.respond(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
        except (aiohttp.ClientError, TimeoutError, SlackClientError, ValueError) as exc:
            # ValueError: the request carried no response_url to answer through
            log.warning("could not answer %s through response_url: %s", self.actor, exc)
