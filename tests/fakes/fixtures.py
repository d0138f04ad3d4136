"""Ready-made pytest fixtures.  In a conftest: ``pytest_plugins = ["fakes.fixtures"]``
(or list this module in ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .openai import FakeOpenAI
from .pagerduty import FakePagerDuty
from .slack import FakeSlack

__all__ = ["fake_openai", "fake_pagerduty", "fake_slack"]


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def fake_pagerduty() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake
