"""``alerts``: related alerts firing in Alertmanager (API v2), found by templated matchers.

Each matcher template renders in the sandbox (values through ``quote``) and must parse
as exactly one matcher, so a label value cannot add or widen a matcher. Only active
alerts count (not silenced, not inhibited), and the incident's own alerts are left
out: the value is how many *other* alerts match, zero included.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from bot.core.matchers import Matcher, MatcherError, parse_matcher
from bot.diagnostics.base import DiagnosticStep, StepError, StepInput
from bot.diagnostics.judge import Outcome, Point
from bot.diagnostics.result import DiagnosticStatus
from bot.diagnostics.units import format_labels
from bot.playbook.model import AlertsDiagnostic
from bot.upstream.alertmanager import AlertmanagerError


def _line(alert: dict[str, Any]) -> str:
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    name = labels.get("alertname", "(no alertname)")
    since = str(alert.get("startsAt", ""))[:19].replace("T", " ")
    return f"{name} {format_labels(labels, frozenset({'alertname'}))} since {since}"


class AlertsStep(DiagnosticStep[AlertsDiagnostic]):
    kind = "alerts"
    upstream = "Alertmanager"

    async def _invoke(self, spec: AlertsDiagnostic, step: StepInput) -> Outcome:
        matchers: list[Matcher] = []
        for template in spec.matchers:
            rendered = self.render(template, step)
            try:
                matchers.append(parse_matcher(rendered))
            except MatcherError as exc:
                raise StepError(f"matcher {template!r} rendered to {rendered!r}: {exc}") from None
        shown = ", ".join(str(m) for m in matchers)
        try:
            found = await self.sources.alertmanager.alerts(matchers)
        except AlertmanagerError as exc:
            return Outcome.failed(str(exc), shown, cause=exc.cause, upstream=self.upstream)
        related = [
            alert
            for alert in found
            if isinstance(alert, dict) and alert.get("fingerprint") not in step.own_fingerprints
        ]
        related.sort(key=lambda alert: str(alert.get("startsAt", "")), reverse=True)
        lines = [_line(alert) for alert in related[: spec.top_k]]
        if len(related) > spec.top_k:
            lines.append(f"... and {len(related) - spec.top_k} more")
        listed: list[JsonValue] = [
            {
                "labels": {str(k): str(v) for k, v in (alert.get("labels") or {}).items()},
                "startsAt": str(alert.get("startsAt", "")),
                "fingerprint": str(alert.get("fingerprint", "")),
            }
            for alert in related[: spec.top_k]
        ]
        return Outcome(
            DiagnosticStatus.OK,
            [Point({}, float(len(related)))],
            query=shown,
            unit="count",
            lines=lines,
            details={"alerts": listed},
        )
