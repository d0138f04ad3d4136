"""The incident's own records, which belong to no one feature.

- ``incident.data["truncated"]`` (``Truncated``): written by the store when Alertmanager
  left alerts out of a delivery (``max_alerts``), removed when a delivery leaves none out;
- ``incident.data["pipeline"]`` (``PipelineState``): the playbooks the pipeline matched
  and how far it got (``bot.pipeline``).
"""

from __future__ import annotations

from bot.core.incidents import Incident
from bot.records.base import Stored, record_of


class Truncated(Stored):
    """``incident.data["truncated"]``: Alertmanager's last delivery left ``alerts``
    alerts of the group out; the incident resolves only once a delivery leaves none out."""

    alerts: int
    at: float | None = None


class PipelineState(Stored):
    """``incident.data["pipeline"]``: what the pipeline matched and how far it got.

    ``matched_at`` is written only with the ``playbook.matched`` event, so a run that
    finds it knows the match is recorded and keeps it."""

    playbooks: list[str] | None = None  # None: not matched yet
    state: str = ""  # matched, diagnosed, done, done: no playbook, skipped: ...
    matched_at: float | None = None
    diagnosed_at: float | None = None

    def dump(self) -> dict[str, object]:
        """Times not reached yet are left out, as they always were: ``matched_at`` in the
        stored record is what says the match is recorded."""
        return self.model_dump(mode="json", exclude_none=True)


def truncated_of(incident: Incident) -> Truncated | None:
    return record_of(incident, "truncated", Truncated)


def pipeline_of(incident: Incident) -> PipelineState:
    return record_of(incident, "pipeline", PipelineState) or PipelineState()
