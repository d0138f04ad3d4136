"""The silences kept on an incident: ``incident.data["silences"]``, a list of ``SilenceRecord``.

Only ``bot.silences.service`` writes the list (inside ``store.change_incident``); the Slack
message shows the active ones and PagerDuty's acknowledgement silences look for their
own. An entry that is not a readable record is left out of what readers see, and kept as
it is when the list is written back.
"""

from __future__ import annotations

from pydantic import Field

from bot.core.incidents import Incident
from bot.records.base import Stored, parsed


class SilenceRecord(Stored):
    """One silence alertpilot created in Alertmanager for the incident.

    Written with only the keys that apply (``by``, ``url``, ``until``, ``step`` and
    ``matchers`` when its source gives them), as it always was."""

    id: str
    source: str = ""  # slack | pagerduty | remediation
    expire_on_resolve: bool = False
    created_at: float | None = None
    expired_at: float | None = None
    expired: bool = False  # how an expiry was marked before expired_at
    by: str = ""  # who asked for it
    url: str = ""  # the silence in Alertmanager's UI
    until: str = ""  # when it ends by itself, for people
    matchers: list[str] = Field(default_factory=list)
    step: str = ""  # the remediation step that made it

    @property
    def active(self) -> bool:
        """Not known to be expired."""
        return bool(self.id) and not self.expired_at and not self.expired

    @property
    def due_on_resolve(self) -> bool:
        return self.active and self.expire_on_resolve

    def dump(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude_unset=True)


def stored_silences(incident: Incident) -> list[object]:
    """The list as stored (each entry a copy), for writing it back with nothing lost."""
    raw = incident.data.get("silences")
    if not isinstance(raw, list):
        return []
    return [dict(item) if isinstance(item, dict) else item for item in raw]


def silence_of(entry: object, incident_id: int) -> SilenceRecord | None:
    """One stored entry as a record; None when it is not one."""
    return parsed(entry, SilenceRecord, what=f'incident #{incident_id} data["silences"] entry')


def silences_of(incident: Incident) -> list[SilenceRecord]:
    """The incident's readable silence records, in the order they were made."""
    found = (silence_of(entry, incident.id) for entry in stored_silences(incident))
    return [record for record in found if record is not None]
