"""Inbound JSON as RFC 8259 defines it.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON: no
other reader takes them back, and a ``NaN`` compares unequal to itself. A body holding
one is refused like any other malformed body.
"""

from __future__ import annotations

import json
from typing import Any


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that raises ValueError on ``NaN`` and the infinities."""
    return json.loads(raw, parse_constant=_refuse)
