"""Shared fixtures. ``tests/`` is on the import path (pyproject: pythonpath)."""

from __future__ import annotations

pytest_plugins = ["fakes.fixtures"]
