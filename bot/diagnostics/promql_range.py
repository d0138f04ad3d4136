"""``promql_range``: a range query over ``window`` at ``step``, summarised per series.

Each series becomes min / max / avg / last and a trend; the expectation is judged on
``last``. The trend is the least-squares slope over the window: rising or falling when
it moves the value by more than 10% of the series' scale (its mean magnitude, or half
its range if that is larger), flat otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bot.core.durations import format_duration
from bot.diagnostics.base import DiagnosticStep, StepInput
from bot.diagnostics.judge import Outcome, Point
from bot.diagnostics.result import DiagnosticStatus, RangeSummary, Trend
from bot.diagnostics.units import format_value
from bot.playbook.model import PromqlRangeDiagnostic
from bot.upstream.prometheus import PrometheusError

TREND_THRESHOLD = 0.1
MAX_POINTS = 11_000  # Prometheus refuses more points per series


def trend_of(points: Sequence[tuple[float, float]]) -> Trend:
    if len(points) < 2:
        return Trend.FLAT
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t == 0:
        return Trend.FLAT
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var_t
    change = slope * (points[-1][0] - points[0][0])
    values = [v for _, v in points]
    scale = max(abs(mean_v), (max(values) - min(values)) / 2)
    if scale == 0 or abs(change) <= TREND_THRESHOLD * scale:
        return Trend.FLAT
    return Trend.RISING if change > 0 else Trend.FALLING


def summarise(points: Sequence[tuple[float, float]]) -> RangeSummary | None:
    finite = [(t, v) for t, v in points if math.isfinite(v)]
    if not finite:
        return None
    values = [v for _, v in finite]
    return RangeSummary(
        min=min(values),
        max=max(values),
        avg=sum(values) / len(values),
        last=values[-1],
        trend=trend_of(finite),
        points=len(finite),
    )


class PromqlRangeStep(DiagnosticStep[PromqlRangeDiagnostic]):
    kind = "promql_range"
    upstream = "Prometheus"

    async def _invoke(self, spec: PromqlRangeDiagnostic, step: StepInput) -> Outcome:
        query = self.render(spec.query, step)
        if spec.step <= 0 or spec.window <= 0:
            return Outcome.failed("window and step must be positive", query)
        if spec.window / spec.step > MAX_POINTS:
            return Outcome.failed(
                f"window / step is more than {MAX_POINTS} points: raise step", query
            )
        end = self.sources.clock.now()
        try:
            found = await self.sources.prometheus.query_range(
                query, start=end - spec.window, end=end, step=spec.step, timeout=spec.timeout
            )
        except PrometheusError as exc:
            return Outcome.failed(str(exc), query, cause=exc.cause, upstream=self.upstream)
        points = []
        for series in found:
            summary = summarise(series.points)
            if summary is None:
                continue
            unit = spec.unit
            note = (
                f"now (min {format_value(summary.min, unit)}, "
                f"avg {format_value(summary.avg, unit)}, max {format_value(summary.max, unit)} "
                f"over {format_duration(spec.window)}, {summary.trend.value})"
            )
            points.append(Point(series.labels, summary.last, note, summary))
        if not points:
            return Outcome(DiagnosticStatus.NO_DATA, query=query)
        return Outcome(DiagnosticStatus.OK, points, query=query)
