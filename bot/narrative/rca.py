"""RCA documents posted to ``POST /api/v1/narratives`` and ``POST
/api/v1/mira/rca_analyze`` (``rcaData``), and their prompt data.

    impact       service (or impactService), metric (or metricName), severity,
                 timeWindow {start, end} (or timeStartStr, timeEndStr)
    rootCause    service, component, evidence (text or list)
    chains       [{steps: [{service, kpiName, suspicionScore}], score}] (or lists of steps)
    diagnostics  {timeRings: {...} or [...]}

The RCA API's whole response is accepted as well, its envelope included:
``{"status": "success", "data": {"impact": ..., "rootCause": ..., ...}}``.

Unknown fields are ignored (newer producers add some); known fields must have their
types, and lists are bounded, so a malformed document is a 400, not a half-read one.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from bot.narrative.facts import clip

Text = Annotated[str, Field(max_length=2000)]
Number = Annotated[float, Field(ge=-1e9, le=1e9, allow_inf_nan=False)]


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TimeWindow(Loose):
    start: Text | None = None
    end: Text | None = None


class Impact(Loose):
    service: Text = Field(validation_alias=AliasChoices("service", "impactService"))
    metric: Text | None = Field(default=None, validation_alias=AliasChoices("metric", "metricName"))
    severity: Text | Number | None = None
    timeWindow: TimeWindow | None = None

    @model_validator(mode="before")
    @classmethod
    def _time_strings(cls, value: Any) -> Any:
        """The RCA API's ``timeStartStr`` and ``timeEndStr`` are the time window."""
        if isinstance(value, dict) and "timeWindow" not in value:
            start, end = value.get("timeStartStr"), value.get("timeEndStr")
            if start is not None or end is not None:
                return {**value, "timeWindow": {"start": start, "end": end}}
        return value


def _evidence(value: object) -> object:
    return [value] if isinstance(value, str | dict) else value


class RootCause(Loose):
    service: Text | None = None
    component: Text | None = None
    evidence: Annotated[
        list[Text | dict[str, Any]], BeforeValidator(_evidence), Field(max_length=50)
    ] = Field(default_factory=list)


class ChainStep(Loose):
    service: Text | None = None
    kpiName: Text | None = Field(default=None, validation_alias=AliasChoices("kpiName", "kpi"))
    component: Text | None = None
    suspicionScore: Number | None = None


def _chain(value: object) -> object:
    return {"steps": value} if isinstance(value, list) else value


class Chain(Loose):
    steps: list[ChainStep] = Field(min_length=1, max_length=50)
    score: Number | None = None

    @property
    def top(self) -> float:
        scores = [s.suspicionScore for s in self.steps if s.suspicionScore is not None]
        if self.score is not None:
            scores.append(self.score)
        return max(scores, default=0.0)

    def path(self) -> str:
        parts = []
        for step in self.steps:
            name = ":".join(p for p in (step.service, step.kpiName or step.component) if p)
            score = f"({step.suspicionScore:.2f})" if step.suspicionScore is not None else ""
            parts.append(f"{name or '?'}{score}")
        return " -> ".join(parts)


class RcaDiagnostics(Loose):
    timeRings: dict[str, Any] | list[Any] | None = None


class RcaDocument(Loose):
    @model_validator(mode="before")
    @classmethod
    def _envelope(cls, value: Any) -> Any:
        """The RCA API's response as it comes: ``{"status": "success", "data": {...}}``."""
        if (
            isinstance(value, dict)
            and "impact" not in value
            and isinstance(value.get("data"), dict)
        ):
            return value["data"]
        return value

    impact: Impact
    rootCause: RootCause | None = None
    chains: list[Annotated[Chain, BeforeValidator(_chain)]] = Field(
        default_factory=list, max_length=100
    )
    diagnostics: RcaDiagnostics | None = None

    def ranked_chains(self) -> list[Chain]:
        return sorted(self.chains, key=lambda c: c.top, reverse=True)


class RcaSubject:
    """An RCA document as prompt data; the lowest-scored chains go first when cutting."""

    task = "rca"

    def __init__(self, doc: RcaDocument) -> None:
        self.doc = doc
        self.chains = doc.ranked_chains()
        rings = doc.diagnostics.timeRings if doc.diagnostics else None
        if isinstance(rings, dict):
            self.rings: list[Any] = [{"ring": k, "detail": clip(v, 300)} for k, v in rings.items()]
        elif isinstance(rings, list):
            self.rings = [clip(v, 300) for v in rings]
        else:
            self.rings = []

    def __len__(self) -> int:
        return len(self.chains) + len(self.rings)

    def context(self, n: int, *, tight: bool = False) -> dict[str, Any]:
        impact = self.doc.impact
        out: dict[str, Any] = {
            "impact": {
                k: v
                for k, v in {
                    "service": impact.service,
                    "metric": impact.metric,
                    "severity": impact.severity,
                    "start": impact.timeWindow.start if impact.timeWindow else None,
                    "end": impact.timeWindow.end if impact.timeWindow else None,
                }.items()
                if v is not None
            }
        }
        cause = self.doc.rootCause
        if cause is not None:
            limit = 3 if tight else 10
            out["rootCause"] = {
                k: v
                for k, v in {
                    "service": cause.service,
                    "component": cause.component,
                    "evidence": [clip(e, 120 if tight else 300) for e in cause.evidence[:limit]]
                    or None,
                }.items()
                if v is not None
            }
        chains = self.chains[: min(n, len(self.chains))]
        if chains:
            out["chains"] = [
                {"rank": i + 1, "score": round(c.top, 3), "path": c.path()}
                for i, c in enumerate(chains)
            ]
        rings = self.rings[: max(0, n - len(self.chains))]
        if rings:
            out["timeRings"] = rings
        omitted = {
            "chains": len(self.chains) - len(chains),
            "timeRings": len(self.rings) - len(rings),
        }
        if any(omitted.values()):
            out["omitted"] = {k: v for k, v in omitted.items() if v}
        return out
