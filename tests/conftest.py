"""Shared fixtures. ``tests/`` is on the import path (pyproject: pythonpath)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from pgkit import PgServer, pg_server

pytest_plugins = ["fakes.fixtures"]

FIXTURES = Path(__file__).parent / "fixtures"
# The API is off without a token: tests configure one, and send it with API.
API_TOKEN = "test-api-token-0123456789abcdef"
API = {"Authorization": f"Bearer {API_TOKEN}"}
JSON = {"Content-Type": "application/json"}  # what the JSON endpoints take


def payload(name: str) -> dict[str, Any]:
    """A captured Alertmanager payload: ``captured-firing``, ``captured-resolved``, ..."""
    path = FIXTURES / "alertmanager" / f"{name}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Settings for a test: a private SQLite file, fast workers, and any overrides."""
    base: dict[str, Any] = {
        "server": {"api_token": API_TOKEN},
        "store": {"url": f"sqlite:///{tmp_path}/alertpilot.db"},
        "workers": {"poll_interval": 0.05, "backoff_base": 0.01, "backoff_max": 0.05},
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": 1, "retries": 0},
        "alertmanager": {"url": "http://127.0.0.1:9", "timeout": 1},
        "playbooks": {"paths": []},
    }
    for name, value in sections.items():
        base[name] = {**base.get(name, {}), **value} if isinstance(value, dict) else value
    return Settings.model_validate(base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session (started on first use)."""
    with pg_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)
