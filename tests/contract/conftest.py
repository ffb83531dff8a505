from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.ports.run_store import RunStore
from cadenza.testing import InMemoryRunStore
from tests.contract.pg import fresh_database

StoreFactory = Callable[[], RunStore]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database for this session's PostgreSQL tests; every test gets its own schema."""
    with fresh_database() as url:
        yield url


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory", "dynamodb"]
)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes stores over one fresh backend: two stores from it act like two processes.

    The in-memory store has no backend besides itself, so its "processes" share the one
    instance, as several engines in one test process would. DynamoDB (with S3 for large
    records) runs on a moto server on loopback, a fresh table per test."""
    if request.param == "memory":
        shared = InMemoryRunStore()
        return lambda: shared
    if request.param == "dynamodb":
        make: StoreFactory = request.getfixturevalue("dynamodb_store")
        return make
    if request.param == "sqlite":
        path = tmp_path / "cadenza.db"
        return lambda: SqliteRunStore(path, synchronous="NORMAL")
    from cadenza.adapters.postgres import PostgresRunStore

    url = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    return lambda: PostgresRunStore.from_url(f"{url}?schema={schema}&pool_max=4")


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[RunStore]:
    opened = store_factory()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
