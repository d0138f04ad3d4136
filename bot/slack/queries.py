"""Read-only answers for the slash command: a PromQL query, who is on call, a runbook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.errors import PermanentFailure, RetryLater
from bot.notify.links import LinkPolicy
from bot.slack.graph import GraphSpec, caption, draw, split_threshold
from bot.slack.mrkdwn import clip, code, escape, link
from bot.slack.state import SlackState

if TYPE_CHECKING:
    from bot.slack.replies import Reply

MAX_ROWS = 10


def _block(text: str) -> str:
    return "```" + escape(text).replace("```", "'''") + "```"


async def query_text(state: SlackState, promql: str, reply: Reply) -> str:
    prometheus = state.prometheus()
    samples = await prometheus.query(promql, timeout=10.0)
    head = f"*Query* {code(promql, 400)}: {len(samples)} result(s)"
    if samples:
        rows = sorted(samples, key=lambda s: s.value, reverse=True)[:MAX_ROWS]
        width = min(70, max(len(_labels(s.labels)) for s in rows))
        table = "\n".join(f"{clip(_labels(s.labels), 70):<{width}}  {s.value:.6g}" for s in rows)
        more = f"\n…and {len(samples) - MAX_ROWS} more" if len(samples) > MAX_ROWS else ""
        head += "\n" + _block(table) + more
    query, threshold = split_threshold(promql)
    spec = GraphSpec(query=query, threshold=threshold, title=promql)
    graph = await draw(prometheus, spec, end=state.clock.now())
    if not graph.series or not reply.channel_id:
        return head + ("\n_No data in the last hour to graph._" if not graph.series else "")
    try:
        await state.outbox.upload(
            reply.channel_id,
            data=graph.png,
            filename="query.png",
            title=clip(promql, 200),
            comment=f"{caption(spec, graph)}\nrequested by {escape(reply.actor)}",
        )
    except (RetryLater, PermanentFailure) as exc:
        return head + f"\n_The graph could not be posted here: {escape(clip(str(exc), 200))}_"
    return head + "\n_The graph of the last hour is posted in this channel._"


def _labels(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}" if inner or not name else name


def _get(item: Any, *path: str) -> Any:
    for key in path:
        if item is None:
            return None
        item = item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)
    return item


async def oncall_text(state: SlackState, schedule: str | None) -> str:
    directory = state.features.oncall
    if directory is None:
        return "PagerDuty is not configured, so alertpilot cannot say who is on call."
    entries = await directory.oncall(schedule=schedule)
    if not entries:
        return "Nobody is on call right now, according to PagerDuty."
    lines = ["*On call now* (PagerDuty)"]
    for entry in list(entries)[:20]:
        who = _get(entry, "user", "summary") or _get(entry, "user", "name") or _get(entry, "user")
        level = _get(entry, "escalation_level") or _get(entry, "level")
        where = _get(entry, "schedule", "summary") or _get(entry, "escalation_policy", "summary")
        until = _get(entry, "end") or _get(entry, "until")
        line = f"• *{escape(clip(str(who or '?'), 80))}*"
        if level is not None:
            line += f" · level {escape(level)}"
        if where:
            line += f" · {escape(clip(str(where), 80))}"
        if until:
            line += f" · until {escape(until)}"
        lines.append(line)
    return "\n".join(lines)


def runbook_text(state: SlackState, name: str) -> str:
    playbooks = state.features.playbooks
    if playbooks is None:
        return "No playbooks are loaded, so there is no runbook to show."
    found = list(playbooks.matching({"alertname": name}))
    if not found:
        found = [
            p
            for p in playbooks
            if p.name == name
            or any(m.name == "alertname" and m.matches({"alertname": name}) for m in p.match)
        ]
    if not found:
        return f"No playbook handles the alert {code(name, 80)}."
    return "\n\n".join(_runbook(p, state.notifier.links) for p in found[:3])


def _runbook(playbook: Any, links: LinkPolicy) -> str:
    lines = [f":book: *{escape(playbook.name)}*"]
    if playbook.description:
        lines.append(escape(clip(playbook.description, 300)))
    lines.append("Matches " + " ".join(code(str(m), 80) for m in playbook.match))
    if playbook.diagnostics:
        lines.append("*Diagnostics*")
        lines += [
            f"• {code(d.name, 60)} {escape(clip(d.label or '', 100))}" for d in playbook.diagnostics
        ]
    if playbook.remediations:
        lines.append("*Remediation steps*")
        for number, step in enumerate(playbook.remediations, start=1):
            what = f" — {escape(clip(step.description, 150))}" if step.description else ""
            lines.append(f"{number}. {code(step.name, 60)} ({step.mode.value}){what}")
    if playbook.runbook:
        lines.append("*Runbook*\n" + escape(clip(playbook.runbook, 1500)))
    for item in playbook.links[:5]:  # a path is resolved against links.runbook_base_url
        lines.append(f"• {link(links.resolve(item.url), item.title)}")
    return "\n".join(lines)
