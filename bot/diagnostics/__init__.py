"""Diagnostic steps: what a playbook reads to explain an incident.

One module per kind (``promql``, ``promql_range``, ``alerts``, ``http``), a base that
does timing, timeout, logging and the expectation (``base``, ``judge``), one result type
(``result``), number formatting (``units``) and the registry that runs them (``runner``).
"""

from bot.diagnostics.base import Sources, StepInput
from bot.diagnostics.result import DiagnosticResult, DiagnosticStatus, Trend
from bot.diagnostics.runner import Diagnostics

__all__ = ["DiagnosticResult", "DiagnosticStatus", "Diagnostics", "Sources", "StepInput", "Trend"]
