"""The message's buttons: Acknowledge, Resolve, Escalate, Silence, Approve/Reject, Re-run.

Slack gets its ack at once; the action runs afterwards and the presser hears back
privately. What the press changed reaches the message through the timeline.

A button's value comes back from the client and can name any incident, so a press is
held to the same scope as the slash command (``bot.slack.access``): the incident's own
channel, or a responder. Approve/Reject keep their rule: approvers only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.slack import operations as ops
from bot.slack.mrkdwn import clip, escape
from bot.slack.replies import BadArguments, Reply, actor_of, incident_id, silence_choice
from bot.slack.state import SlackState

log = logging.getLogger(__name__)

ACTION_IDS = (
    "ap_ack",
    "ap_resolve",
    "ap_escalate",
    "ap_silence",
    "ap_rerun",
    "ap_approve",
    "ap_reject",
)


def _object(value: Any) -> dict[str, Any]:
    """A payload field that should be an object; anything else reads as empty."""
    return value if isinstance(value, dict) else {}


def _split(value: str) -> tuple[int, str]:
    ref, sep, rest = value.partition(":")
    if not sep or not rest:
        raise BadArguments(f"malformed button value {escape(clip(value, 40))!s}")
    return incident_id(ref), rest


async def on_action(
    state: SlackState,
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond | None,
) -> None:
    user = _object(body.get("user"))
    channel = _object(body.get("channel"))
    channel_id, channel_name = channel.get("id"), channel.get("name")
    reply = Reply(
        state,
        user_id=str(user.get("id", "")),
        actor=actor_of(user),
        channel_id=channel_id if isinstance(channel_id, str) else None,
        ack=ack,
        respond=respond,
        channel_name=channel_name if isinstance(channel_name, str) else None,
    )
    action_id = str(action.get("action_id", ""))
    value = str(action.get("value") or _object(action.get("selected_option")).get("value") or "")
    log.info("slack button %s (%s) pressed by %s", action_id, value, reply.actor)
    try:
        work = _work(state, reply, action_id, value)
    except BadArguments as exc:
        await ack()
        await reply.tell(f":warning: {exc}")
        return
    await reply.later(work(), f"slack-button-{action_id}")


def _work(
    state: SlackState, reply: Reply, action_id: str, value: str
) -> Callable[[], Awaitable[str | None]]:
    actor = reply.actor
    if action_id in ("ap_approve", "ap_reject"):
        ident, step = _split(value)
        approve = action_id == "ap_approve"
        return lambda: ops.decide(
            state, ident, step, approve=approve, user_id=reply.user_id, actor=actor
        )
    caller = reply.caller
    if action_id == "ap_silence":
        ident, picked = _split(value)
        choice = silence_choice(picked)
        return lambda: ops.scoped(
            state, caller, "silence", ident, lambda: ops.silence(state, ident, choice, actor)
        )
    ident = incident_id(value)
    simple = {
        "ap_ack": ops.acknowledge,
        "ap_resolve": ops.resolve,
        "ap_escalate": ops.escalate,
        "ap_rerun": ops.rerun,
    }
    operation = simple.get(action_id)
    if operation is None:
        raise BadArguments(f"unknown button {escape(clip(action_id, 40))!s}")
    command = action_id.removeprefix("ap_")
    return lambda: ops.scoped(state, caller, command, ident, lambda: operation(state, ident, actor))
