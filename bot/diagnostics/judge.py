"""From a step's raw answer to its result: the expectation, the headline and the top-k.

With several series, each must meet the expectation for the step to pass; the headline
shows the worst one (the highest for ``<``/``<=``/``==``/``!=``, the lowest for ``>``/``>=``)
and ``lines`` the ``top_k`` worst, then ``... and N more``. NaN never passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from bot.diagnostics.result import (
    DiagnosticResult,
    DiagnosticStatus,
    NotChecked,
    RangeSummary,
    SeriesValue,
)
from bot.diagnostics.units import format_expectation, format_labels, format_value
from bot.playbook.model import DiagnosticBase, Expectation


@dataclass(frozen=True)
class Point:
    """One series' value (for ranges, its last value) and what to print after it."""

    labels: Mapping[str, str]
    value: float | None
    note: str = ""  # e.g. "(min 1s, avg 2s, max 3s, rising)"
    summary: RangeSummary | None = None


@dataclass
class Outcome:
    """What a step's ``_invoke`` found, before judging."""

    status: DiagnosticStatus
    points: Sequence[Point] = ()
    query: str | None = None
    error: str | None = None
    unit: str | None = None  # overrides the spec's unit (http latency is in seconds)
    shown: str | None = None  # the headline value as text, when it is not a number
    failure: str | None = None  # fails the step whatever the value (e.g. HTTP 503)
    lines: list[str] | None = None  # ready-made lines (alerts) instead of series lines
    details: dict[str, JsonValue] = field(default_factory=dict)
    cause: NotChecked = NotChecked.ERROR  # with ERROR: why there is no answer
    upstream: str = ""  # with ERROR: whose answer is missing

    @classmethod
    def failed(
        cls,
        error: str,
        query: str | None = None,
        *,
        cause: str = NotChecked.ERROR,
        upstream: str = "",
    ) -> Outcome:
        return cls(
            DiagnosticStatus.ERROR,
            error=error,
            query=query,
            cause=NotChecked(cause),
            upstream=upstream,
        )


def _holds(expect: Expectation, value: float | None) -> bool:
    return value is not None and not math.isnan(value) and expect.holds(value)


def _badness(expect: Expectation | None, value: float | None) -> tuple[int, float]:
    """Sort key: failing and NaN first, then the side the expectation guards against."""
    if value is None or math.isnan(value):
        return (0, 0.0)
    failing = 0 if expect is not None and not expect.holds(value) else 1
    lowest_is_worst = expect is not None and expect.op in (">", ">=")
    return (failing, value if lowest_is_worst else -value)


def judge(
    spec: DiagnosticBase, playbook: str, kind: str, out: Outcome, elapsed: float
) -> DiagnosticResult:
    label = spec.label or spec.name
    unit = out.unit if out.unit is not None else spec.unit
    expect = format_expectation(spec.expect, unit) if spec.expect is not None else None
    common: dict[str, Any] = {
        "playbook": playbook,
        "name": spec.name,
        "label": label,
        "kind": kind,
        "query": out.query,
        "unit": unit,
        "expect": expect,
        "primary": spec.primary,
        "elapsed": round(elapsed, 4),
        "details": out.details,
    }
    if out.status is DiagnosticStatus.ERROR:
        return DiagnosticResult(
            status=out.status,
            error=out.error,
            cause=out.cause,
            upstream=out.upstream,
            text=f"{label}: error: {out.error}",
            **common,
        )
    if out.status is DiagnosticStatus.NO_DATA:
        wanted = f" (expected {expect})" if expect else ""
        why = f": {out.error}" if out.error else ""
        return DiagnosticResult(
            status=out.status, error=out.error, text=f"{label}: no data{why}{wanted}", **common
        )

    points = sorted(out.points, key=lambda p: _badness(spec.expect, p.value))
    worst = points[0] if points else None
    value = worst.value if worst is not None else None
    passed: bool | None = None
    if spec.expect is not None:
        passed = all(_holds(spec.expect, p.value) for p in points) if points else False
    if out.failure is not None:
        passed = False
    shown = out.shown if out.shown is not None else format_value(value, unit)
    headline = f"{label}: {shown}"
    if worst is not None and worst.note:
        headline += f" {worst.note}"
    if len(points) > 1:
        headline += f", worst of {len(points)} series"
    if out.failure:
        headline += f"; {out.failure}"
    if expect:
        headline += f" (expected {expect})"
    if passed is not None:
        headline += " PASS" if passed else " FAIL"

    top = points[: spec.top_k]
    lines = out.lines
    if lines is None:
        skip = _shared_labels(points) if len(points) > 1 else frozenset()
        lines = [
            f"{format_labels(p.labels, skip)}: {format_value(p.value, unit)}"
            + (f" {p.note}" if p.note else "")
            for p in top
        ]
        if len(points) > len(top):
            lines.append(f"... and {len(points) - len(top)} more")
    return DiagnosticResult(
        status=out.status,
        passed=passed,
        value=value,
        text=headline,
        lines=lines,
        series=[
            SeriesValue(labels=dict(p.labels), value=p.value, text=format_value(p.value, unit))
            for p in top
        ],
        series_count=len(points),
        summary=worst.summary if worst is not None else None,
        **common,
    )


def _shared_labels(points: Sequence[Point]) -> frozenset[str]:
    """Labels with the same value in every series: they tell the series apart no better."""
    first = points[0].labels
    return frozenset(k for k, v in first.items() if all(p.labels.get(k) == v for p in points[1:]))
