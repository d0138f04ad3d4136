"""Remediation steps and approvals as people are shown them (the Slack message, the
postmortem draft, the narrative's facts).

The engine keeps ``incident.data["remediations"]`` and ``incident.data["approvals"]`` as
``StepRecord`` and ``ApprovalRecord`` (``bot.remediation.records``), read strictly: a step
it cannot read is never planned or run again. What is shown must not depend on that:
records from earlier versions (a list instead of a map, ``status`` for ``state``, ``runs``
for ``attempt``) and partial ones are shown as far as they can be read. ``StepView`` is
that reading, one per entry; an entry that is not a record is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.core.incidents import Incident
from bot.records.base import Stored, parsed


class ResultView(Stored):
    summary: str | None = None
    output: str | None = None


class StepView(Stored):
    """One step or approval as stored, every field optional."""

    key: str  # its key in the map, or its own name in a list
    name: str | None = None
    step: str | None = None
    state: str | None = None
    status: str | None = None  # ``state`` as early versions called it
    reason: str | None = None
    guard: str | None = None
    attempt: int | None = None
    runs: int | None = None  # ``attempt`` as early versions called it
    output: str | None = None
    result: ResultView | None = None

    @property
    def current(self) -> str | None:
        """The state, under either name."""
        return self.state or self.status


def _entries(raw: object) -> list[tuple[str, object]]:
    """(key, entry) pairs of a map, or of a list named by each entry's step or name."""
    if isinstance(raw, Mapping):
        return [(str(key), value) for key, value in raw.items()]
    if isinstance(raw, list):
        return [
            (str(item.get("step") or item.get("name") or "?"), item)
            for item in raw
            if isinstance(item, Mapping)
        ]
    return []


def _views(incident: Incident, key: str) -> list[StepView]:
    views = []
    for name, entry in _entries(incident.data.get(key)):
        if not isinstance(entry, Mapping):
            continue  # not a record: nothing to show
        found = parsed(
            {**_result_as_map(entry), "key": name},
            StepView,
            what=f'incident #{incident.id} data["{key}"] entry {name!r}',
        )
        if found is not None:
            views.append(found)
    return views


def _result_as_map(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry, its ``result`` left out unless it is a map (early versions kept text)."""
    result = entry.get("result")
    return {**entry, "result": result if isinstance(result, Mapping) else None}


def step_views(incident: Incident) -> list[StepView]:
    """``incident.data["remediations"]`` as shown."""
    return _views(incident, "remediations")


def approval_views(incident: Incident) -> list[StepView]:
    """``incident.data["approvals"]`` as shown."""
    return _views(incident, "approvals")
