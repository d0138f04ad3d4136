"""One count of a run's results, in the three outcomes people act on: failed, passed,
not checked (no answer: an error, a timeout, an upstream unreachable or its breaker
open, or an empty answer), and apart the answers with nothing to judge.

A step that did not run is never counted as passed, and the reason it did not run is
said once for all the steps it stopped: ``2 failed (error_rate, pool), 1 passed,
6 not checked (Prometheus unreachable)``. Every summary of diagnostics (the
``diagnostics.done`` event, the Slack thread reply) is this one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.diagnostics.result import DiagnosticResult, DiagnosticStatus, NotChecked

ERROR, NO_DATA, NOT_APPLICABLE = "error", "no data", "not applicable"


def _why(upstream: str, cause: str) -> str:
    if cause == NotChecked.NOT_APPLICABLE:
        return NOT_APPLICABLE
    if cause == NotChecked.UNREACHABLE:
        return f"{upstream or 'source'} unreachable"
    if cause == NotChecked.TIMEOUT:
        return f"{upstream or 'source'} did not answer in time"
    return ERROR


@dataclass
class Tally:
    failed: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    informational: list[str] = field(default_factory=list)  # an answer, no expectation
    # why -> names: "Prometheus unreachable" -> [...], "no data" -> [...]
    not_checked: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.failed) + len(self.passed) + len(self.informational) + self.unchecked

    @property
    def unchecked(self) -> int:
        return sum(len(names) for names in self.not_checked.values())

    def line(self) -> str:
        """``2 failed (a, b), 1 passed, 6 not checked (Prometheus unreachable)``."""
        if self.total and self.unchecked == self.total and len(self.not_checked) == 1:
            [(why, names)] = self.not_checked.items()
            if why not in (ERROR, NO_DATA, NOT_APPLICABLE):
                return f"{why}: checks not run ({len(names)} of {self.total})"
        parts = []
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({', '.join(self.failed)})")
        if self.passed:
            parts.append(f"{len(self.passed)} passed")
        if self.informational:
            parts.append(f"{len(self.informational)} answered (nothing to judge)")
        if self.not_checked:
            whys = [
                why if why != ERROR else f"error: {', '.join(names)}"
                for why, names in self.not_checked.items()
            ]
            if len(whys) > 1:
                counts = [len(names) for names in self.not_checked.values()]
                whys = [f"{n} {why}" for n, why in zip(counts, whys, strict=True)]
            parts.append(f"{self.unchecked} not checked ({'; '.join(whys)})")
        return ", ".join(parts) if parts else "no diagnostics"


def _data(result: DiagnosticResult | Mapping[str, Any]) -> Mapping[str, Any]:
    return result.to_json() if isinstance(result, DiagnosticResult) else result


def outcome(result: DiagnosticResult | Mapping[str, Any]) -> str:
    """``failed``, ``passed``, ``not_checked`` or ``answered`` (an answer, nothing to judge)."""
    data = _data(result)
    if data.get("status") in (DiagnosticStatus.ERROR, DiagnosticStatus.NO_DATA):
        return "not_checked"
    passed = data.get("passed")
    return "failed" if passed is False else "passed" if passed is True else "answered"


def why_not_checked(result: DiagnosticResult | Mapping[str, Any]) -> str:
    """``Prometheus unreachable``, ``Alertmanager did not answer in time``, ``no data``,
    or the error itself."""
    data = _data(result)
    if data.get("status") == DiagnosticStatus.NO_DATA:
        return NO_DATA
    why = _why(str(data.get("upstream") or ""), str(data.get("cause") or ERROR))
    if why == NOT_APPLICABLE:  # "not applicable: needs label `namespace`"
        return str(data.get("error") or why)
    if why != ERROR:
        return why
    return f"error: {data.get('error') or _after_label(data) or 'unknown'}"


def _after_label(data: Mapping[str, Any]) -> str:
    text, label = str(data.get("text") or ""), str(data.get("label") or "")
    return text.removeprefix(f"{label}: ") if label else text


def finding(result: DiagnosticResult | Mapping[str, Any]) -> str:
    """What a step found, after its label: ``12.3% (expected < 5%) FAIL``, or ``not
    checked (Prometheus unreachable)``."""
    data = _data(result)
    if outcome(data) == "not_checked":
        why = why_not_checked(data)
        return why if why.startswith(NOT_APPLICABLE) else f"not checked ({why})"
    value = data.get("value")
    return _after_label(data) or (
        "" if value is None else f"{value:.4g}" if isinstance(value, int | float) else str(value)
    )


def tally(results: Iterable[DiagnosticResult | Mapping[str, Any]]) -> Tally:
    """Count results, as objects or as stored on the incident (their JSON)."""
    out = Tally()
    for result in results:
        data = _data(result)
        if not isinstance(data, Mapping):
            continue
        name = str(data.get("name") or data.get("label") or "?")
        kind = outcome(data)
        if kind == "not_checked":
            why = (
                NO_DATA
                if data.get("status") == DiagnosticStatus.NO_DATA
                else _why(str(data.get("upstream") or ""), str(data.get("cause") or ERROR))
            )
            out.not_checked.setdefault(why, []).append(name)
        else:
            {"failed": out.failed, "passed": out.passed, "answered": out.informational}[
                kind
            ].append(name)
    return out
