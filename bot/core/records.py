"""Reading typed records back from where they are stored, and the incident's own records.

Features keep their state in ``incident.data`` (one top-level key each) and in the store's
key-value table. Each key has a model next to the feature that owns it (see
docs/architecture.md); these helpers read one back so that a value written by an older
version, or damaged, never stops a reader: it gets the model's default and one log line
that says which record and why.

Two keys belong to the incident itself rather than to a feature:

- ``incident.data["truncated"]`` (``Truncated``): written by the store when Alertmanager
  left alerts out of a delivery (``max_alerts``), removed when a delivery leaves none out;
- ``incident.data["pipeline"]`` (``PipelineState``): the playbooks the pipeline matched
  and how far it got (``bot.pipeline``).
"""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.core.incidents import Incident

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class Stored(BaseModel):
    """A record as stored: keys it does not know (written by another version or another
    writer) are kept as they are and written back, so an upgrade or a rollback loses
    nothing of what is there."""

    model_config = ConfigDict(extra="allow")

    def dump(self) -> dict[str, object]:
        """The JSON-ready form kept in ``incident.data``."""
        return self.model_dump(mode="json")

    def dumps(self) -> str:
        """The JSON text kept in the key-value table."""
        return self.model_dump_json()


def parsed(raw: object, model: type[M], *, what: str) -> M | None:
    """``raw`` as ``model``; None, with a log line naming ``what``, when it is not one."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        log.warning("unreadable %s, left out: %s", what, _first_error(exc))
        return None


def loaded(raw: str | None, model: type[M], *, what: str) -> M | None:
    """A key-value record (JSON text) as ``model``; None when absent or unreadable."""
    if raw is None:
        return None
    try:
        return parsed(json.loads(raw), model, what=what)
    except ValueError:
        log.warning("unreadable %s, left out: not JSON", what)
        return None


def record_of(incident: Incident, key: str, model: type[M]) -> M | None:
    """``incident.data[key]`` as ``model``; None when it is absent or unreadable."""
    raw = incident.data.get(key)
    if raw is None:
        return None
    return parsed(raw, model, what=f'incident #{incident.id} data["{key}"]')


def _first_error(exc: ValidationError) -> str:
    """One line for the log: the first problem and where it is."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(the record)"
    return f"{where}: {first['msg']} ({exc.error_count()} problem(s))"


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
