"""Alert storms: many incidents opened within a short window get one summary.

``is_storm`` counts incidents opened within ``llm.storm_window``; more than
``llm.storm_threshold`` is a storm. A storm is keyed by the window bucket it started in,
so every incident of one burst shares one summary job (``narrative.storm:<bucket>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.core.incidents import Incident
from bot.narrative.context import pairs
from bot.narrative.facts import from_incident

SERVICE_LABELS = ("service", "app", "job", "namespace")


def service_of(labels: dict[str, str]) -> str:
    return next((labels[k] for k in SERVICE_LABELS if labels.get(k)), "")


@dataclass(frozen=True)
class StormIncident:
    id: int
    title: str
    severity: str
    status: str
    alertname: str
    service: str
    firing: int
    failing: str  # the first failed diagnostic's label, if any
    opened_at: float


@dataclass(frozen=True)
class StormFacts:
    key: str
    window_minutes: int
    incidents: tuple[StormIncident, ...]

    @property
    def count(self) -> int:
        return len(self.incidents)

    def top(self, field: str, n: int = 5) -> list[tuple[str, int]]:
        counts = Counter(getattr(i, field) for i in self.incidents if getattr(i, field))
        return counts.most_common(n)


def storm_row(incident: Incident) -> StormIncident:
    """What a storm summary keeps of one incident (the incident itself can be let go)."""
    facts = from_incident(incident)
    labels = {**incident.common_labels, **incident.group_labels}
    failed = facts.failed_diagnostics
    return StormIncident(
        id=incident.id,
        title=incident.title,
        severity=incident.severity.value,
        status=incident.status.value,
        alertname=labels.get("alertname", ""),
        service=service_of(labels),
        firing=len(incident.firing),
        failing=failed[0].label if failed else "",
        opened_at=incident.opened_at,
    )


def storm_facts(key: str, window: float, rows: Iterable[StormIncident]) -> StormFacts:
    """The storm's facts, most severe incidents first (then the earliest)."""
    ordered = sorted(rows, key=lambda row: (row.severity, row.opened_at))
    return StormFacts(key, max(1, round(window / 60)), tuple(ordered))


class StormSubject:
    """The storm as prompt data: totals first, then incidents, most severe first."""

    task = "storm"

    def __init__(self, facts: StormFacts) -> None:
        self.facts = facts

    def __len__(self) -> int:
        return len(self.facts.incidents)

    def context(self, n: int, *, tight: bool = False) -> dict[str, Any]:
        f = self.facts
        out: dict[str, Any] = {
            "storm": {
                "incidents": f.count,
                "window_min": f.window_minutes,
                "by_alert": pairs({k: str(v) for k, v in f.top("alertname")}),
                "by_service": pairs({k: str(v) for k, v in f.top("service")}),
                "by_severity": pairs({k: str(v) for k, v in f.top("severity")}),
            }
        }
        rows = [
            {
                "id": i.id,
                "severity": i.severity,
                "title": i.title,
                "status": i.status,
                "firing": i.firing,
                "failing": i.failing,
            }
            for i in f.incidents[:n]
        ]
        if rows:
            out["incidents"] = rows
        if n < len(f.incidents):
            out["omitted"] = {"incidents": len(f.incidents) - n}
        return out
