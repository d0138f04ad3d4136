"""The diagnostics' results kept on an incident: ``incident.data["diagnostics"]``.

The pipeline writes the list, one ``DiagnosticResult`` (``bot.diagnostics.result``) each,
as its JSON. Entries written by older versions (or by hand) may lack fields, so readers
take each entry as a mapping and read it defensively (``bot.diagnostics.summary``,
``bot.narrative.facts``); an entry that is not a mapping is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.core.incidents import Incident

if TYPE_CHECKING:
    from bot.diagnostics.result import DiagnosticResult

log = logging.getLogger(__name__)


def diagnostics_of(incident: Incident) -> list[Mapping[str, Any]] | None:
    """The stored results; None when no diagnostics ran (nothing stored)."""
    raw = incident.data.get("diagnostics")
    if raw is None:
        return None
    if not isinstance(raw, list):
        log.warning('incident #%d: data["diagnostics"] is not a list, left out', incident.id)
        return None
    return [item for item in raw if isinstance(item, Mapping)]


def diagnostics_data(results: Sequence[DiagnosticResult]) -> list[dict[str, Any]]:
    """What ``incident.data["diagnostics"]`` holds for ``results``."""
    return [result.to_json() for result in results]
