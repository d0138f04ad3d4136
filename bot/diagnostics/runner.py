"""Diagnostics: the step kinds by ``kind``, and running a playbook's steps concurrently.

Built once per app (``bot.pipeline``) from the app's Prometheus and Alertmanager clients
and HTTP session; ``simulate`` builds its own. Steps run at most ``concurrency`` at a
time, each under its own timeout; results come back in playbook order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bot.diagnostics.alerts import AlertsStep
from bot.diagnostics.base import DiagnosticStep, Sources, StepInput
from bot.diagnostics.http import HttpStep
from bot.diagnostics.promql import PromqlStep
from bot.diagnostics.promql_range import PromqlRangeStep
from bot.diagnostics.result import DiagnosticResult
from bot.incidents import Incident
from bot.playbook.model import Diagnostic, Playbook
from bot.playbook.templating import context


class Diagnostics:
    def __init__(self, sources: Sources, *, concurrency: int = 8) -> None:
        self.sources = sources
        self._semaphore = asyncio.Semaphore(concurrency)
        steps: list[DiagnosticStep[Any]] = [
            PromqlStep(sources),
            PromqlRangeStep(sources),
            AlertsStep(sources),
            HttpStep(sources),
        ]
        self.steps: dict[str, DiagnosticStep[Any]] = {step.kind: step for step in steps}

    async def run_step(self, spec: Diagnostic, step: StepInput) -> DiagnosticResult:
        async with self._semaphore:
            return await self.steps[spec.kind].invoke(spec, step)

    async def run(
        self,
        playbooks: Sequence[Playbook],
        ctx: Mapping[str, Any],
        own_fingerprints: frozenset[str] = frozenset(),
    ) -> list[DiagnosticResult]:
        """Every diagnostic of these playbooks, concurrently; results in playbook order."""
        calls = [
            self.run_step(spec, StepInput(playbook.name, ctx, own_fingerprints))
            for playbook in playbooks
            for spec in playbook.diagnostics
        ]
        return list(await asyncio.gather(*calls))

    async def for_incident(
        self, playbooks: Sequence[Playbook], incident: Incident
    ) -> list[DiagnosticResult]:
        own = frozenset(alert.fingerprint for alert in incident.alerts)
        return await self.run(playbooks, context(incident), own)
