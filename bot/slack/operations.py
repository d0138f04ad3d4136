"""What a button press or a command does, the same from either: through IncidentActions,
the silencer, the remediation engine or the pipeline, with the Slack user as the actor.

Each returns the sentence the user is told; the incident's message changes through the
timeline like for any other change. ``scoped`` runs one only when the user may act on
that incident from where they ask (``bot.slack.access``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.core.incidents import Status
from bot.pagerduty.sender import TriggerOutcome
from bot.pagerduty.state import already_paged, state_of
from bot.remediation.approvals import note_refused
from bot.slack import mrkdwn
from bot.slack.access import Caller, Refused, log_refusal
from bot.slack.mrkdwn import escape
from bot.slack.silence_menu import UNTIL_RESOLVED
from bot.slack.state import SlackState
from bot.store.base import Store


def refusal(caller: Caller, command: str, incident_id: int | None, exc: Refused) -> str:
    """Log a refusal and word it for the user. Nothing goes on the incident's timeline: an
    attempt from outside its channel should not reach that channel's thread."""
    log_refusal(caller, command, incident_id, str(exc))
    return f":no_entry: {exc}"


async def scoped(
    state: SlackState,
    caller: Caller,
    command: str,
    incident_id: int,
    work: Callable[[], Awaitable[str | None]],
) -> str | None:
    """``work()`` when the caller may act on the incident from where they are; otherwise,
    and when ``work`` itself refuses (a silence over the cap), why not."""
    incident = await state.store.get_incident(incident_id, timeline=False)  # NotFound
    try:
        await state.access.incident(caller, incident, command)
        return await work()
    except Refused as exc:
        return refusal(caller, command, incident_id, exc)


async def _status(store: Store, incident_id: int) -> tuple[Status, str | None]:
    incident = await store.get_incident(incident_id, timeline=False)
    return incident.status, incident.acknowledged_by


async def acknowledge(state: SlackState, incident_id: int, actor: str) -> str:
    status, by = await _status(state.store, incident_id)
    if status is Status.ACKNOWLEDGED:
        return f"#{incident_id} is already acknowledged by {escape(by or 'someone')}."
    if status is Status.RESOLVED:
        return f"#{incident_id} is resolved; there is nothing to acknowledge."
    await state.actions.acknowledge(incident_id, actor=actor, source="slack")
    return f":eyes: You acknowledged #{incident_id}."


async def resolve(state: SlackState, incident_id: int, actor: str) -> str:
    status, _ = await _status(state.store, incident_id)
    if status is Status.RESOLVED:
        return f"#{incident_id} is already resolved."
    await state.actions.resolve(
        incident_id, actor=actor, source="slack", reason="resolved in Slack"
    )
    return f":white_check_mark: You resolved #{incident_id}."


async def escalate(state: SlackState, incident_id: int, actor: str) -> str:
    incident = await state.store.get_incident(incident_id, timeline=False)
    if incident.status is Status.RESOLVED:
        return f"#{incident_id} is resolved; there is nobody to page."
    page = state_of(incident)
    await state.actions.escalate(
        incident_id, actor=actor, source="slack", reason="page requested in Slack"
    )
    if state.settings.pagerduty is None:
        return (
            f":rotating_light: Escalation of #{incident_id} is on the timeline, but PagerDuty "
            "is not configured: nobody was paged."
        )
    if already_paged(page):  # the pager sends no second trigger
        where = mrkdwn.link(page.html_url, "PagerDuty") if page.html_url else "PagerDuty"
        return (
            f":rotating_light: #{incident_id} is {TriggerOutcome.ALREADY.value}: {where} holds "
            f"its alert ({page.alert}), so nobody is paged again."
        )
    return f":rotating_light: You escalated #{incident_id}: on-call is being paged."


async def silence(state: SlackState, incident_id: int, choice: float | str, actor: str) -> str:
    """Raises ``Refused`` for a length over ``slack.max_silence`` ("until resolved" is
    bounded by the silencer instead)."""
    if choice != UNTIL_RESOLVED:
        state.access.silence(float(choice))
    return await state.silencer.silence(incident_id, choice, actor=actor)


async def decide(
    state: SlackState, incident_id: int, step: str, *, approve: bool, user_id: str, actor: str
) -> str:
    verb = "approve" if approve else "reject"
    engine = state.features.remediation
    if engine is None:
        return "Remediation is not configured here: there is nothing to approve or reject."
    allowed, why = await state.approvers.check(user_id)
    if not allowed:
        await note_refused(
            state.store,
            incident_id,
            actor=actor,
            verb=verb,
            step=step,
            source="slack",
            where="Slack",
            why=why,
            now=state.clock.now(),
        )
        return f":no_entry: You cannot {verb} remediations: {why}."
    await state.store.get_incident(incident_id, timeline=False)  # NotFound for a wrong id
    if approve:
        await engine.approve(incident_id, step, actor=actor, source="slack")
    else:
        await engine.reject(incident_id, step, actor=actor, source="slack")
    done = "approved" if approve else "rejected"
    return f"You {done} `{escape(step)}` on #{incident_id}."


async def rerun(state: SlackState, incident_id: int, actor: str) -> str:
    pipeline = state.features.pipeline
    if pipeline is None:
        return "Diagnostics cannot be re-run here: the playbook pipeline is not configured."
    await state.store.get_incident(incident_id, timeline=False)
    run = await pipeline.rerun_diagnostics(incident_id, actor)
    status, message = run.status, escape(run.message)
    if status != "done":
        return f"Diagnostics did not run for #{incident_id}: {message or status}."
    return f":mag: Diagnostics re-run for #{incident_id}: {message}. Details are in its thread."
