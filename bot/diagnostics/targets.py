"""``targets``: the scrape targets of a job, from the configured Prometheus.

A service that is down exports nothing to query, but Prometheus still says why it cannot
scrape it: "connection refused" (the process is gone), a timeout (it hangs), an HTTP
status. The value is how many targets are down; each down target's last scrape error
is listed. Read through the Prometheus client, so it goes to ``prometheus.url`` with its
credentials and breaker: the address is the configuration's, never a playbook's.
"""

from __future__ import annotations

from pydantic import JsonValue

from bot.diagnostics.base import DiagnosticStep, StepError, StepInput
from bot.diagnostics.judge import Outcome, Point
from bot.diagnostics.result import DiagnosticStatus
from bot.diagnostics.units import format_labels
from bot.playbook.model import TargetsDiagnostic
from bot.upstream.prometheus import PrometheusError

SHOWN = frozenset({"job", "__address__"})


class TargetsStep(DiagnosticStep[TargetsDiagnostic]):
    kind = "targets"
    upstream = "Prometheus"

    async def _invoke(self, spec: TargetsDiagnostic, step: StepInput) -> Outcome:
        job = self.render(spec.job, step).strip()
        if not job:
            raise StepError(f"job {spec.job!r} rendered empty")
        try:
            targets = await self.sources.prometheus.targets(job, timeout=spec.timeout)
        except PrometheusError as exc:
            return Outcome.failed(
                str(exc), f"targets of {job}", cause=exc.cause, upstream=self.upstream
            )
        down = [t for t in targets if t.health != "up"]
        lines = [
            f"{format_labels(t.labels, SHOWN) or t.labels.get('instance', '?')}: "
            f"{t.health}, {t.last_error or 'no error given'}"
            for t in down[: spec.top_k]
        ]
        if len(down) > spec.top_k:
            lines.append(f"... and {len(down) - spec.top_k} more")
        if not targets:
            lines.append(f"Prometheus has no active targets in scrape pool {job!r}")
        listed: list[JsonValue] = [
            {"labels": dict(t.labels), "health": t.health, "lastError": t.last_error}
            for t in down[: spec.top_k]
        ]
        return Outcome(
            DiagnosticStatus.OK,
            [Point({}, float(len(down)))],
            query=f"targets of {job}: {len(down)} of {len(targets)} down",
            unit="count",
            lines=lines,
            details={"targets": listed},
        )
