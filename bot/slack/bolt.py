"""The slack-bolt ``AsyncApp`` behind ``/slack/events`` and Socket Mode.

Signatures are verified in ``bot.slack.http`` before bolt sees a request (against the
app's injected clock), so bolt's own check is off. Authorization never calls Slack:
the bot token is configured, and an ``auth.test`` on the ack path would only add
latency and a failure mode. Listeners run before the response (``process_before_response``):
each acks at once and hands slow work to ``SlackState.tasks``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.buttons import on_action
from bot.slack.slash import on_command
from bot.slack.state import SlackState


def build_bolt(state: SlackState) -> AsyncApp:
    settings = state.slack
    token = settings.bot_token.get_secret_value()

    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

    bolt = AsyncApp(
        client=AsyncWebClient(base_url=state.client.base_url, timeout=state.client.timeout),
        signing_secret=settings.signing_secret.get_secret_value(),
        authorize=authorize,
        request_verification_enabled=False,
        process_before_response=True,
        logger=logging.getLogger("bot.slack.bolt"),
    )

    async def command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond | None) -> None:
        await on_command(state, ack, command, respond)

    async def action(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond | None
    ) -> None:
        await on_action(state, ack, body, action, respond)

    bolt.command(settings.command)(command)
    bolt.action(re.compile(r"^ap_"))(action)
    return bolt
