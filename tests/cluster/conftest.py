from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.pg import fresh_database


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with fresh_database("cadenza_cluster") as url:
        yield url
