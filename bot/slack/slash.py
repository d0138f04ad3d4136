"""The slash command (``slack.command``, default ``/alertpilot``).

Fast answers (help, list, show, runbook, usage) ride in the ack; anything that calls
another system (acting on an incident, Alertmanager, Prometheus, PagerDuty) is acked
at once and answered through ``response_url`` when done. Answers are ephemeral: the
incident's own message and thread carry what everyone should see.

What acts on or shows one incident is held to its channel or to responders, ``list``
shows others only the incidents of the channel they ask in, and ``query`` is open only
where configured (``bot.slack.access``); a refusal is answered privately and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.core.incidents import Incident, Status
from bot.errors import NotFound
from bot.slack import operations as ops
from bot.slack.access import Refused
from bot.slack.mrkdwn import clip, escape
from bot.slack.queries import oncall_text, query_text, runbook_text
from bot.slack.render import SEVERITY_ICON, Extras, incident_message, section
from bot.slack.replies import BadArguments, Reply, actor_of, incident_id, silence_choice
from bot.slack.state import SlackState

log = logging.getLogger(__name__)

SUBCOMMANDS: list[tuple[str, str]] = [
    ("list", "open incidents"),
    ("show ID", "one incident, with its latest events"),
    ("ack ID", "acknowledge an incident"),
    ("resolve ID", "resolve an incident"),
    ("silence ID DURATION", "silence its alerts in Alertmanager (30m, 4h, or `resolved`)"),
    ("approve ID STEP", "approve a pending remediation step (approvers only)"),
    ("reject ID STEP", "reject a pending remediation step (approvers only)"),
    (
        "query PROMQL",
        "run a PromQL query: a small table and a graph of the last hour (where allowed)",
    ),
    ("oncall", "who is on call (PagerDuty)"),
    ("runbook ALERTNAME", "the playbook for an alert: its steps and runbook"),
    ("help", "this help"),
]


def usage(command: str, problem: str | None = None) -> str:
    lines = [f":warning: {problem}", ""] if problem else []
    lines.append(f"*{command}* — alertpilot from Slack")
    lines += [f"• `{command} {syntax}` — {what}" for syntax, what in SUBCOMMANDS]
    lines.append(
        "_An incident is handled in the channel its message is in; responders may act on "
        "it from anywhere._"
    )
    return "\n".join(lines)


async def on_command(
    state: SlackState, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond | None
) -> None:
    reply = Reply(
        state,
        user_id=str(command.get("user_id", "")),
        actor=actor_of(command),
        channel_id=command.get("channel_id"),
        ack=ack,
        respond=respond,
        channel_name=command.get("channel_name"),
    )
    text = str(command.get("text") or "").strip()
    name, _, rest = text.partition(" ")
    name, rest = name.lower(), rest.strip()
    log.info("slack command %r by %s", name or "(none)", reply.actor)
    handler = _HANDLERS.get(name)
    try:
        if handler is None:
            problem = f"unknown subcommand {escape(clip(name, 30))!s}" if name else None
            await reply.now(usage(state.slack.command, problem))
            return
        await handler(state, reply, rest)
    except BadArguments as exc:
        await reply.now(usage(state.slack.command, str(exc)))


def _args(rest: str, count: int, syntax: str) -> list[str]:
    parts = rest.split()
    if len(parts) != count:
        raise BadArguments(f"expected `{syntax}`")
    return parts


async def _help(state: SlackState, reply: Reply, rest: str) -> None:
    await reply.now(usage(state.slack.command))


async def _list(state: SlackState, reply: Reply, rest: str) -> None:
    if rest:
        raise BadArguments("`list` takes no arguments")
    found: list[Incident] = []
    for status in (Status.TRIGGERED, Status.ACKNOWLEDGED):
        found += await state.store.list_incidents(status=status, limit=50)
    found.sort(key=lambda i: (i.severity.value, -i.id))
    here = [i for i in found if state.access.in_channel(reply.caller, i)]
    if len(here) == len(found):
        await reply.now(_listing(found, hidden=False))
        return

    async def listing() -> str:
        """Some are elsewhere: all of them for a responder (which may take a Slack call
        to learn, so after the ack), this channel's for anyone else."""
        if await state.access.responder(reply.caller):
            return _listing(found, hidden=False)
        return _listing(here, hidden=True)

    await reply.later(listing(), "slack-command-list")


def _listing(found: list[Incident], *, hidden: bool) -> str:
    note = "\n_Incidents of other channels are listed for responders only._" if hidden else ""
    if not found:
        where = " in this channel" if hidden else ""
        return f":sunny: No open incidents{where}.{note}"
    lines = [f"*{len(found)} open incident(s)*"]
    for incident in found[:30]:
        lines.append(
            f"{SEVERITY_ICON[incident.severity]} *#{incident.id}* {incident.severity.value} "
            f"{incident.status.value} · {escape(clip(incident.title, 100))}"
        )
    if len(found) > 30:
        lines.append(f"…and {len(found) - 30} more")
    return "\n".join(lines) + note


async def _show(state: SlackState, reply: Reply, rest: str) -> None:
    (ref,) = _args(rest, 1, "show ID")
    ident = incident_id(ref)
    try:
        incident = await state.store.get_incident(ident)
    except NotFound:
        await reply.now(f"There is no incident #{ident}.")
        return
    if state.access.in_channel(reply.caller, incident):
        await reply.now(*_shown(state, incident))
        return

    async def shown() -> None:
        await reply.tell(*_shown(state, incident))

    work = ops.scoped(state, reply.caller, "show", ident, shown)
    await reply.later(work, "slack-command-show")


def _shown(state: SlackState, incident: Incident) -> tuple[str, list[dict[str, Any]]]:
    extras = Extras(
        buttons=False,
        alertmanager_url=state.settings.alertmanager.browser_url,
        links=state.notifier.links,
    )
    rendered = incident_message(incident, extras)
    events = [
        f"• {escape(e.kind)} by {escape(clip(e.actor, 60))}: {escape(clip(e.message, 200))}"
        for e in incident.timeline[-6:]
    ]
    return rendered.text, [*rendered.blocks[:40], section("*Latest events*\n" + "\n".join(events))]


def _action(operation: Callable[[SlackState, int, str], Awaitable[str]], syntax: str) -> Any:
    name = syntax.split()[0]

    async def run(state: SlackState, reply: Reply, rest: str) -> None:
        (ref,) = _args(rest, 1, syntax)
        ident = incident_id(ref)
        work = ops.scoped(
            state, reply.caller, name, ident, lambda: operation(state, ident, reply.actor)
        )
        await reply.later(work, f"slack-command-{name}")

    return run


async def _silence(state: SlackState, reply: Reply, rest: str) -> None:
    ref, duration = _args(rest, 2, "silence ID DURATION")
    ident = incident_id(ref)
    choice = silence_choice(duration)
    work = ops.scoped(
        state,
        reply.caller,
        "silence",
        ident,
        lambda: ops.silence(state, ident, choice, reply.actor),
    )
    await reply.later(work, "slack-command-silence")


def _decision(approve: bool) -> Any:
    syntax = "approve ID STEP" if approve else "reject ID STEP"

    async def run(state: SlackState, reply: Reply, rest: str) -> None:
        ref, step = _args(rest, 2, syntax)
        ident = incident_id(ref)
        work = ops.decide(
            state, ident, step, approve=approve, user_id=reply.user_id, actor=reply.actor
        )
        await reply.later(work, f"slack-command-{syntax.split()[0]}")

    return run


async def _query(state: SlackState, reply: Reply, rest: str) -> None:
    if not rest:
        raise BadArguments("expected `query PROMQL`")

    async def answer() -> str:
        try:
            await state.access.query(reply.caller)
        except Refused as exc:
            return ops.refusal(reply.caller, "query", None, exc)
        return await query_text(state, rest, reply)

    await reply.later(answer(), "slack-command-query")


async def _oncall(state: SlackState, reply: Reply, rest: str) -> None:
    if state.features.oncall is None:
        await reply.now("PagerDuty is not configured, so alertpilot cannot say who is on call.")
        return
    await reply.later(oncall_text(state, rest or None), "slack-command-oncall")


async def _runbook(state: SlackState, reply: Reply, rest: str) -> None:
    (name,) = _args(rest, 1, "runbook ALERTNAME")
    await reply.now(runbook_text(state, name))


_HANDLERS: dict[str, Callable[[SlackState, Reply, str], Awaitable[None]]] = {
    "help": _help,
    "list": _list,
    "show": _show,
    "ack": _action(ops.acknowledge, "ack ID"),
    "resolve": _action(ops.resolve, "resolve ID"),
    "silence": _silence,
    "approve": _decision(True),
    "reject": _decision(False),
    "query": _query,
    "oncall": _oncall,
    "runbook": _runbook,
}
