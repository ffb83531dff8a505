from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cadenza.testing import FakeClock, TestEnvironment

pytest_plugins = ["pytester", "tests._native", "tests._aws"]


@pytest.fixture
async def env() -> AsyncIterator[TestEnvironment]:
    async with TestEnvironment() as environment:
        yield environment


@pytest.fixture
async def fake_env() -> AsyncIterator[TestEnvironment]:
    async with TestEnvironment(clock=FakeClock()) as environment:
        yield environment
