"""Numbers as people read them, by a diagnostic's ``unit``.

The unit says what the query returns: ``ratio`` is a fraction (0.123 reads ``12.3%``, and
``expect: "< 0.05"`` reads ``< 5%``), ``percent`` is already in percent (12.3 reads
``12.3%``), ``count`` a plain number; ``seconds`` and ``ms`` read as ``850ms``, ``3.2s``,
``4m12s``; ``bytes`` in binary units; ``per_second`` as ``12.3/s``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from bot.core.durations import format_duration
from bot.core.matchers import promql_string
from bot.playbook.model import Expectation


def number(value: float) -> str:
    """Three significant digits, no exponent for everyday magnitudes."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 0.001:
        return f"{value:.3g}"
    return f"{value:.2e}"


def _seconds(value: float) -> str:
    size = abs(value)
    if size < 1:
        return f"{number(value * 1000)}ms"
    if size < 60:
        return f"{number(value)}s"
    return ("-" if value < 0 else "") + format_duration(size)


def _bytes(value: float) -> str:
    size, unit = abs(value), "B"
    for next_unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024:
            break
        size, unit = size / 1024, next_unit
    sign = "-" if value < 0 else ""
    return f"{sign}{number(size)} {unit}"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return number(value)
    if unit == "ratio":
        return f"{number(value * 100)}%"
    if unit == "percent":
        return f"{number(value)}%"
    if unit == "seconds":
        return _seconds(value)
    if unit == "ms":
        return _seconds(value / 1000)
    if unit == "bytes":
        return _bytes(value)
    if unit == "per_second":
        return f"{number(value)}/s"
    return number(value)


def format_expectation(expect: Expectation, unit: str) -> str:
    return f"{expect.op} {format_value(expect.value, unit)}"


def format_labels(labels: Mapping[str, str], skip: frozenset[str] = frozenset()) -> str:
    """``{code="500", instance="a"}``; values quoted and escaped, so one line stays one line."""
    shown = [f"{k}={promql_string(v)}" for k, v in sorted(labels.items()) if k not in skip]
    return "{" + ", ".join(shown) + "}"
