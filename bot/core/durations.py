"""Durations as people write them in configs and playbooks: ``30s``, ``5m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> float:
    """Return seconds for ``"90s"``, ``"5m"``, ``"1h30m"`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h30m)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest readable form: ``300`` -> ``5m``, ``5400`` -> ``1h30m``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    rest, out = round(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A pydantic field type: accepts ``"5m"`` or seconds, holds seconds as float."""


def parse_target(value: object) -> float | None:
    """A time limit: a positive duration, or ``never`` (also ``none``, null) for none."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("never", "none")):
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"not a time limit: {value!r} (a positive duration, or never)")
    return seconds


Target = Annotated[float | None, BeforeValidator(parse_target)]
"""A pydantic field type for a time limit: ``"15m"`` or ``never`` (None)."""
