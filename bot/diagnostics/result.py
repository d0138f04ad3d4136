"""The one result type of every diagnostic step, as stored on the incident.

``status`` says whether the step got an answer (``ok``), an empty one (``no_data``) or
none (``error``: the step was not checked; ``cause`` says why, ``upstream`` whose
answer it lacked); ``passed`` says whether the answer meets the step's expectation
(None: no expectation, or nothing to judge). ``text`` is the headline a person reads,
e.g. ``5xx share: 12.3% (expected < 5%) FAIL``; ``lines`` the top-k series behind it.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator


class DiagnosticStatus(StrEnum):
    OK = "ok"
    NO_DATA = "no_data"
    ERROR = "error"


class NotChecked(StrEnum):
    """Why a step has no answer."""

    TIMEOUT = "timeout"  # no answer within the step's timeout or the pipeline's deadline
    UNREACHABLE = "unreachable"  # refused, down, 5xx, or its circuit breaker is open
    NOT_APPLICABLE = "not_applicable"  # the alert lacks a label the step's template needs
    ERROR = "error"  # anything else: a query refused, a template, a URL off the list


class Trend(StrEnum):
    RISING = "rising"
    FALLING = "falling"
    FLAT = "flat"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(value: object) -> object:
    """NaN and infinities are not JSON: they are kept as None (the text still says them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class SeriesValue(Strict):
    labels: dict[str, str] = Field(default_factory=dict)
    value: float | None = None
    text: str = ""  # the value formatted in the step's unit

    _finite = field_validator("value", mode="before")(_finite)


class RangeSummary(Strict):
    min: float | None
    max: float | None
    avg: float | None
    last: float | None
    trend: Trend
    points: int

    _finite = field_validator("min", "max", "avg", "last", mode="before")(_finite)


class DiagnosticResult(Strict):
    playbook: str
    name: str
    label: str
    kind: str
    status: DiagnosticStatus
    passed: bool | None = None
    value: float | None = None  # the headline value (the worst series against ``expect``)
    text: str
    lines: list[str] = Field(default_factory=list)  # top-k, then "... and N more"
    series: list[SeriesValue] = Field(default_factory=list)  # top-k
    series_count: int = 0
    summary: RangeSummary | None = None  # promql_range: of the headline series
    query: str | None = None  # the rendered query, URL or matchers
    error: str | None = None
    cause: NotChecked | None = None  # with status error
    upstream: str = ""  # with status error: Prometheus, Alertmanager, service
    unit: str = ""
    expect: str | None = None
    primary: bool = False
    elapsed: float = 0.0
    details: dict[str, JsonValue] = Field(default_factory=dict)

    _finite = field_validator("value", mode="before")(_finite)

    @property
    def verdict(self) -> str:
        """PASS, FAIL, ERROR, NO DATA or "" (an ok answer with nothing to judge)."""
        if self.status is DiagnosticStatus.ERROR:
            return "ERROR"
        if self.status is DiagnosticStatus.NO_DATA:
            return "NO DATA"
        return "" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Any) -> DiagnosticResult:
        return cls.model_validate(data)
