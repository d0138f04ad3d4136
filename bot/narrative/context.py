"""What the model is shown about one incident: the facts, compacted into plain data.

Labels shared by every alert shown are stated once (``common``); each alert keeps only
what is its own. Rows of one list carry the same keys, so TOON can write them as a table.
``IncidentSubject.context(n)`` keeps the ``n`` most telling facts (``facts.ranked``) and
says how many of each kind were left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.narrative.facts import (
    AlertFact,
    DiagnosticFact,
    EventFact,
    IncidentFacts,
    Ranked,
    RemediationFact,
    ranked,
)

JsonDict = dict[str, Any]


def pairs(mapping: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def _shared(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if len(maps) < 2:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def distinct_labels(alerts: Sequence[AlertFact]) -> list[str]:
    """Each alert's labels that not all of ``alerts`` share, as ``k=v k=v``."""
    shared = _shared([a.labels for a in alerts])
    return [pairs({k: v for k, v in a.labels.items() if k not in shared}) for a in alerts]


def minutes_after(start: str | None, when: str) -> int | None:
    """Whole minutes from ``start`` to ``when`` (ISO 8601), or None when either is unknown."""
    if not start or not when:
        return None
    try:
        delta = datetime.fromisoformat(when) - datetime.fromisoformat(start)
    except ValueError:
        return None
    return int(delta.total_seconds() // 60)


def _alert_rows(
    alerts: Sequence[AlertFact], started: str | None
) -> tuple[JsonDict, list[JsonDict]]:
    labels = _shared([a.labels for a in alerts])
    notes = _shared([a.annotations for a in alerts])
    common: JsonDict = {}
    if labels:
        common["labels"] = pairs(labels)
    for key in ("summary", "description"):
        if key in notes:
            common[key] = notes[key]
    rows = []
    for a in alerts:
        own = {k: v for k, v in a.labels.items() if k not in labels}
        note = next(
            (a.annotations[k] for k in ("summary", "description") if k in a.annotations),
            "",
        )
        rows.append(
            {
                "name": a.name,
                "status": a.status,
                "since_min": minutes_after(started, a.starts_at),  # after "started"
                "labels": pairs(own),
                "note": "" if note and note == common.get("summary") else note,
            }
        )
    if all(not row["note"] for row in rows):
        for row in rows:
            del row["note"]
    return common, rows


def _diagnostic_row(d: DiagnosticFact) -> JsonDict:
    """A check that did not run says so, and why: it is not a pass."""
    return {
        "check": d.label,
        "verdict": d.verdict if d.checked else f"not checked ({d.why})",
        "value": d.value,
        "expect": d.expect,
        "unit": d.unit,
        "text": d.text if d.checked else "",
        "top": d.detail,
    }


def _remediation_row(r: RemediationFact) -> JsonDict:
    return {
        "step": r.name,
        "state": r.state,
        "reason": r.reason,
        "ran": r.summary,
        "output": r.output,
        "runs": r.runs,
    }


def _event_row(e: EventFact) -> JsonDict:
    return {"min": e.minute, "kind": e.kind, "by": e.actor, "msg": e.message}


def _drop_empty_columns(rows: list[JsonDict]) -> list[JsonDict]:
    """Columns empty in every row say nothing; the rest stay in every row (a table)."""
    if not rows:
        return rows
    keep = [k for k in rows[0] if any(row.get(k) not in ("", None) for row in rows)]
    return [{k: row.get(k) for k in keep} for row in rows]


def header(facts: IncidentFacts, *, summary_chars: int | None = None) -> JsonDict:
    summary = facts.summary
    if summary_chars is not None and len(summary) > summary_chars:
        summary = summary[: max(0, summary_chars - 1)] + "…"
    # No incident number or wall-clock times of alertpilot's own: the same alerts give the
    # same prompt (and a cache hit) whichever incident they open. Alert times are kept.
    out: JsonDict = {
        "title": facts.title,
        "severity": facts.severity,
        "status": facts.status,
        "started": facts.started_at,
        "duration_min": facts.duration_minutes,
        "acknowledged_by": facts.acknowledged_by,
        "playbook": facts.playbook,
        "summary": summary if summary != facts.title else None,
        "scope": pairs(facts.group_labels) or None,
    }
    return {k: v for k, v in out.items() if v is not None}


class IncidentSubject:
    """One incident's facts as prompt data, cut to the ``n`` most telling items."""

    task = "incident"

    def __init__(self, facts: IncidentFacts) -> None:
        self.facts = facts
        self.items: list[Ranked] = ranked(facts)

    def __len__(self) -> int:
        return len(self.items)

    def context(self, n: int, *, tight: bool = False) -> JsonDict:
        kept = self.items[:n]
        chosen: dict[str, list[Any]] = {
            "alerts": [],
            "diagnostics": [],
            "remediations": [],
            "timeline": [],
        }
        for section, item in kept:
            chosen[section].append(item)
        out: JsonDict = {"incident": header(self.facts, summary_chars=120 if tight else None)}
        alerts: list[AlertFact] = chosen["alerts"]
        if alerts:
            common, rows = _alert_rows(alerts, self.facts.started_at)
            if common:
                out["common"] = common
            out["alerts"] = _drop_empty_columns(rows)
        if chosen["diagnostics"]:
            out["diagnostics"] = _drop_empty_columns(
                [_diagnostic_row(d) for d in chosen["diagnostics"]]
            )
        if chosen["remediations"]:
            out["remediations"] = _drop_empty_columns(
                [_remediation_row(r) for r in chosen["remediations"]]
            )
        if chosen["timeline"]:
            order = {id(e): i for i, e in enumerate(self.facts.timeline)}
            events: list[EventFact] = sorted(chosen["timeline"], key=lambda e: order[id(e)])
            out["timeline"] = [_event_row(e) for e in events]
        dropped = Counter(section for section, _ in self.items[n:])
        if dropped:
            out["omitted"] = dict(sorted(dropped.items()))
        return out
