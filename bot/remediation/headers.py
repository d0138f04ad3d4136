"""Webhook header values are sent, never kept.

A header value may be a credential (``Authorization: Bearer ...``), and a step's record
(``StepRecord.spec``) is stored on the incident, where the API, Slack messages, the
narrative facts and anyone who can read the database file could see it. So the spec is
recorded with each header's name and ``NOT_RECORDED`` for its value (``recorded_spec``),
and the run takes the header templates from the playbook as it is loaded then
(``with_headers``), never from the store. The rest of the recorded spec still decides
what runs: what was approved is what runs, with the credentials the playbook holds now.

A step whose playbook or step is no longer loaded, or whose header names changed since it
was proposed, is not run (guard ``changed``): its headers cannot be rebuilt as proposed.
"""

from __future__ import annotations

from typing import Any, Literal

from bot.playbook.model import Action, Remediation, WebhookAction
from bot.playbook.registry import PlaybookSet
from bot.remediation.results import Guard, Refused

NOT_RECORDED = "(not recorded)"
_ACTIONS = ("action", "rollback")


def recorded_spec(spec: Remediation) -> dict[str, Any]:
    """The step as its record keeps it: every webhook header value is ``NOT_RECORDED``."""
    return masked(spec.model_dump(mode="json"))


def masked(spec: dict[str, Any]) -> dict[str, Any]:
    """A dumped step with every webhook header value ``NOT_RECORDED`` (a copy where one
    changes). ``StepRecord`` passes its ``spec`` through this too, so a record written
    before values were masked loses them the next time it is written."""
    out = dict(spec)
    for field in _ACTIONS:
        action = out.get(field)
        if isinstance(action, dict) and action.get("kind") == "webhook":
            headers = action.get("headers")
            if isinstance(headers, dict) and any(v != NOT_RECORDED for v in headers.values()):
                out[field] = {**action, "headers": dict.fromkeys(headers, NOT_RECORDED)}
    return out


def with_headers(
    spec: Remediation,
    playbooks: PlaybookSet | None,
    playbook: str,
    part: Literal["action", "rollback"],
) -> Remediation:
    """``spec`` (read from a record) with the header templates of its ``part`` (the action
    about to run, or the rollback) taken from the loaded playbook ``playbook``; unchanged
    when that part sends no headers. Raises Refused (guard ``changed``) when they cannot
    be taken from there."""
    recorded: Action | None = getattr(spec, part)
    names = _header_names(recorded)
    if not names:
        return spec
    loaded = playbooks.get(playbook) if playbooks is not None else None
    step = None
    if loaded is not None:
        step = next((s for s in loaded.remediations if s.name == spec.name), None)
    if step is None:
        raise Refused(
            Guard.CHANGED,
            f"playbook {playbook}, step {spec.name} is no longer loaded: its webhook header "
            "values are never recorded, so the call cannot be sent as proposed",
        )
    current: Action | None = getattr(step, part)
    if not isinstance(current, WebhookAction) or sorted(current.headers) != names:
        raise Refused(
            Guard.CHANGED,
            f"the {part}'s webhook headers in the loaded playbook are not the ones proposed "
            f"({', '.join(names)}); their values are never recorded, so the call cannot be "
            "sent as proposed",
        )
    assert isinstance(recorded, WebhookAction)
    restored = recorded.model_copy(update={"headers": dict(current.headers)})
    return spec.model_copy(update={part: restored})


def _header_names(action: Action | None) -> list[str]:
    return sorted(action.headers) if isinstance(action, WebhookAction) else []
