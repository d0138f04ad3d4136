"""``promql``: an instant query; each returned series is one value to judge."""

from __future__ import annotations

from bot.diagnostics.base import DiagnosticStep, StepInput
from bot.diagnostics.judge import Outcome, Point
from bot.diagnostics.result import DiagnosticStatus
from bot.playbook.model import PromqlDiagnostic
from bot.upstream.prometheus import PrometheusError


class PromqlStep(DiagnosticStep[PromqlDiagnostic]):
    kind = "promql"
    upstream = "Prometheus"

    async def _invoke(self, spec: PromqlDiagnostic, step: StepInput) -> Outcome:
        query = self.render(spec.query, step)
        try:
            samples = await self.sources.prometheus.query(query, timeout=spec.timeout)
        except PrometheusError as exc:
            return Outcome.failed(str(exc), query, cause=exc.cause, upstream=self.upstream)
        if not samples:
            return Outcome(DiagnosticStatus.NO_DATA, query=query)
        points = [Point(sample.labels, sample.value) for sample in samples]
        return Outcome(DiagnosticStatus.OK, points, query=query)
