"""What the narrative feature keeps: ``incident.data["narrative"]`` and its storm records.

``NarrativeRecord`` is the narrative shown on the incident (``Narrative.to_data`` writes
it; ``based_on`` and ``storm`` are added when it is saved). During an alert storm one
summary stands for every incident of the storm: ``StormRef`` names the storm, kept in the
key-value table under ``STORM_KEY`` while it lasts, and the summary itself under
``SUMMARY_PREFIX`` + its key.

Records are written with only the keys that were set, as they always were: an API client
sees the same JSON as before.
"""

from __future__ import annotations

from typing import Any

from bot.core.incidents import Incident
from bot.records.base import Stored, loaded, record_of

STORM_KEY = "narrative:storm:current"
SUMMARY_PREFIX = "narrative:storm:"  # then the storm's key


class StormRef(Stored):
    """An alert storm: ``key`` names it (the id of the incident that tipped the count),
    ``since`` is when its first incident opened, ``incidents`` how many its summary covers."""

    key: str
    since: float
    incidents: int | None = None

    def dumps(self) -> str:
        """Without ``incidents`` until it is known, as it always was kept."""
        return self.model_dump_json(exclude_none=True)


class NarrativeRecord(Stored):
    text: str = ""
    source: str = ""  # template | llm
    audience: str | None = None
    generated_at: float | None = None
    model: str | None = None
    tokens: int | None = None
    cached: bool = False
    reason: str = ""  # why the template was used (provider, budget_exhausted, ...)
    dropped: list[dict[str, Any]] = []  # LLM sentences the facts did not support
    dropped_count: int | None = None
    evidence: list[dict[str, Any]] = []  # each kept sentence and the facts behind it
    facts: dict[str, str] = {}
    storm: StormRef | None = None  # a storm summary standing for this incident
    based_on: int | None = None  # the last timeline event it was written from

    def dump(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude_unset=True)

    def dumps(self) -> str:
        return self.model_dump_json(exclude_unset=True)

    def with_storm(self, storm: StormRef) -> NarrativeRecord:
        return self.model_copy(update={"storm": storm})


def narrative_of(incident: Incident) -> NarrativeRecord | None:
    """The incident's narrative; None when it has none (or it is unreadable)."""
    return record_of(incident, "narrative", NarrativeRecord)


def storm_summary(raw: str | None) -> NarrativeRecord | None:
    """A storm's summary as kept under ``narrative:storm:<key>``."""
    return loaded(raw, NarrativeRecord, what="storm summary")


def active_storm(raw: str | None) -> StormRef | None:
    """The storm in progress as kept under ``STORM_KEY``."""
    return loaded(raw, StormRef, what="alert storm")
