"""Diagnostics: the step kinds by ``kind``, and running a playbook's steps concurrently.

Built once per app (``bot.pipeline``) from the app's Prometheus and Alertmanager clients
and HTTP session; ``simulate`` builds its own. Steps run at most ``concurrency`` at a
time across all incidents, each under its own timeout, and all of one run under one
``deadline``: a step without an answer by then (still waiting on its upstream, or for a
slot) is recorded as timed out, never as passed, and the run returns. Results come back
in playbook order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bot.core.incidents import Incident
from bot.diagnostics.alerts import AlertsStep
from bot.diagnostics.base import DiagnosticStep, Sources, StepInput
from bot.diagnostics.http import HttpStep
from bot.diagnostics.judge import Outcome, judge
from bot.diagnostics.promql import PromqlStep
from bot.diagnostics.promql_range import PromqlRangeStep
from bot.diagnostics.result import DiagnosticResult, NotChecked
from bot.diagnostics.targets import TargetsStep
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
            TargetsStep(sources),
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
        *,
        deadline: float | None = None,
    ) -> list[DiagnosticResult]:
        """Every diagnostic of these playbooks, concurrently, within ``deadline`` seconds
        (None: each step's own timeout only); results in playbook order."""
        steps = [
            (playbook.name, spec, StepInput(playbook.name, ctx, own_fingerprints))
            for playbook in playbooks
            for spec in playbook.diagnostics
        ]
        if not steps:
            return []
        clock = self.sources.clock
        started = clock.monotonic()
        tasks = [asyncio.ensure_future(self.run_step(spec, step)) for _, spec, step in steps]
        try:
            await asyncio.wait(tasks, timeout=deadline)
        finally:
            late = [task for task in tasks if not task.done()]
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        elapsed = clock.monotonic() - started
        results = []
        for (playbook, spec, _), task in zip(steps, tasks, strict=True):
            if not task.cancelled() and task.exception() is None:
                results.append(task.result())
                continue
            outcome = Outcome.failed(
                "did not finish"
                if deadline is None
                else f"no answer within the pipeline's {deadline:g}s deadline",
                cause=NotChecked.TIMEOUT,
                upstream=self.steps[spec.kind].upstream,
            )
            results.append(judge(spec, playbook, spec.kind, outcome, elapsed))
        return results

    async def for_incident(
        self, playbooks: Sequence[Playbook], incident: Incident, *, deadline: float | None = None
    ) -> list[DiagnosticResult]:
        own = frozenset(alert.fingerprint for alert in incident.alerts)
        return await self.run(playbooks, context(incident), own, deadline=deadline)
