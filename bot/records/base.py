"""Reading typed records back from where they are stored.

Features keep their state in ``incident.data`` (one top-level key each) and in the store's
key-value table. Each key has a model (see docs/architecture.md); these helpers read one
back so that a value written by an older version, or damaged, never stops a reader: it
gets None (the caller's default) and one log line that says which record and why.
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
        log.warning("unreadable %s, left out: %s", what, first_error(exc))
        return None


def loaded(raw: str | None, model: type[M], *, what: str) -> M | None:
    """A key-value record (JSON text) as ``model``; None when absent or unreadable."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("unreadable %s, left out: not JSON", what)
        return None
    return parsed(value, model, what=what)


def record_of(incident: Incident, key: str, model: type[M]) -> M | None:
    """``incident.data[key]`` as ``model``; None when it is absent or unreadable."""
    raw = incident.data.get(key)
    if raw is None:
        return None
    return parsed(raw, model, what=f'incident #{incident.id} data["{key}"]')


def first_error(exc: ValidationError) -> str:
    """One line for the log: the first problem and where it is."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(the record)"
    return f"{where}: {first['msg']} ({exc.error_count()} problem(s))"
