"""What only the PostgreSQL store has: URLs, migrations under a lock, LISTEN/NOTIFY wake-ups,
clear errors at the boundary, and a missing driver named as the extra to install."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from cadenza.adapters.postgres import PostgresRunStore
from cadenza.adapters.postgres._schema import LATEST
from cadenza.errors import ConfigurationError, MissingDependency, StoreError
from cadenza.ports.run_store import CallbackResolution, CallbackStatus, OutboxEntry, RunStatus
from tests.contract.test_run_store import at, callback, checkpoint, claim_one, create, step

pytestmark = pytest.mark.postgres


def schema_url(url: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}?{query}" if query else url


@pytest.fixture
def fresh_schema(postgres_url: str) -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pg_store(postgres_url: str, fresh_schema: str) -> AsyncIterator[PostgresRunStore]:
    store = PostgresRunStore.from_url(schema_url(postgres_url, schema=fresh_schema))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def test_the_url_carries_pool_and_schema_options_and_passes_the_rest_to_libpq() -> None:
    store = PostgresRunStore.from_url(
        "postgresql://app:secret@db.internal:6432/prod?pool_max=25&schema=billing"
        "&sslmode=require&pool_min=2"
    )
    assert (store.pool_min, store.pool_max, store.schema) == (2, 25, "billing")
    assert store.conninfo == (
        "postgresql://app:secret@db.internal:6432/prod?sslmode=require&connect_timeout=10"
    )
    assert store.channel == "cadenza_work_billing"
    assert PostgresRunStore.from_url("postgres://h/db").schema == "cadenza"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h/db?schema=Robert'); DROP TABLE students;--",
        "postgresql://h/db?pool_max=lots",
        "postgresql://h/db?pool_min=0",
        "mysql://h/db",
    ],
)
def test_a_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        PostgresRunStore.from_url(url)


def test_a_missing_driver_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "from cadenza.config import create_store\n"
        "from cadenza.errors import MissingDependency\n"
        "try:\n"
        "    create_store('postgresql://localhost/db')\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'cadenza[postgres]'" in out.stdout
    assert MissingDependency("x", "postgres").extra == "postgres"


async def test_an_unreachable_server_is_a_clear_retryable_store_error() -> None:
    store = PostgresRunStore.from_url("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert caught.value.retryable
    assert "cannot connect to PostgreSQL" in str(caught.value)
    assert "is the server running" in str(caught.value)


async def test_migrations_are_idempotent_and_safe_when_many_start_at_once(
    postgres_url: str, fresh_schema: str
) -> None:
    url = schema_url(postgres_url, schema=fresh_schema)
    stores = [PostgresRunStore.from_url(url) for _ in range(6)]
    assert [await s.schema_status() for s in stores[:1]] == [(0, LATEST)]
    applied = await asyncio.gather(*(s.upgrade() for s in stores))
    assert sorted(v for versions in applied for v in versions) == list(range(1, LATEST + 1))
    assert await stores[0].upgrade() == []
    assert await stores[0].schema_status() == (LATEST, LATEST)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(f"SELECT version FROM {fresh_schema}.schema_version").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST + 1))


async def test_a_store_without_its_tables_says_to_upgrade(postgres_url: str) -> None:
    store = PostgresRunStore.from_url(schema_url(postgres_url, schema="t_never_created"))
    await store.open()
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA t_never_created CASCADE")
        with pytest.raises(StoreError, match="cadenza db upgrade"):
            await store.get_run("r-1")
    finally:
        await store.close()


async def test_values_postgres_cannot_store_are_refused_without_retry(
    pg_store: PostgresRunStore,
) -> None:
    await create(pg_store, "r-1")
    run = await claim_one(pg_store, "r-1")
    with pytest.raises(StoreError) as caught:
        await pg_store.commit(checkpoint(run, state={"text": "nul \u0000 byte"}))
    assert not caught.value.retryable
    assert (await pg_store.get_run("r-1")).state == {"agentId": "r-1", "status": "INITIATED"}


async def test_an_idle_waiter_hears_about_new_work_at_once(
    postgres_url: str, fresh_schema: str, pg_store: PostgresRunStore
) -> None:
    other = PostgresRunStore.from_url(schema_url(postgres_url, schema=fresh_schema))
    await other.open()
    try:
        await pg_store.wait_for_work(0.5)  # starts listening (and may return at once)
        started = time.monotonic()
        await pg_store.wait_for_work(0.3)
        assert time.monotonic() - started >= 0.25  # nothing happened: waited it out

        async def create_soon() -> None:
            await asyncio.sleep(0.2)
            await create(other, "r-1")

        task = asyncio.create_task(create_soon())
        started = time.monotonic()
        await pg_store.wait_for_work(10.0)
        assert time.monotonic() - started < 5.0
        await task
    finally:
        await other.close()


async def test_wake_ups_and_releases_notify_but_plain_checkpoints_do_not(
    postgres_url: str, fresh_schema: str, pg_store: PostgresRunStore
) -> None:
    notes: list[str] = []
    listener = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)

    async def collect() -> None:
        async for n in listener.notifies():
            notes.append(n.channel)

    async def notified(action: object) -> bool:
        notes.clear()
        await action  # type: ignore[misc]
        await asyncio.sleep(0.3)
        return bool(notes)

    async with listener:
        await listener.execute(f"LISTEN {pg_store.channel}")
        task = asyncio.create_task(collect())
        try:
            assert await notified(create(pg_store, "r-1"))
            run = await claim_one(pg_store, "r-1")
            assert not await notified(pg_store.commit(checkpoint(run, ops=[step("1")])))
            assert not await notified(
                pg_store.commit(
                    checkpoint(run, now=2, callbacks=[callback("cb", "r-1")], suspend=True)
                )
            )
            assert await notified(
                pg_store.complete_callback(
                    CallbackResolution("cb", CallbackStatus.SUCCEEDED), now=at(3)
                )
            )
            run = await claim_one(pg_store, "r-1", now=4)
            assert await notified(pg_store.release_lease("r-1", owner="w1", epoch=run.lease_epoch))
            assert await notified(pg_store.publish([{"id": "e-1", "detail": {}}], now=at(5)))
        finally:
            task.cancel()
    assert (await pg_store.get_run("r-1")).status == RunStatus.PENDING


async def test_a_listening_relay_still_sees_every_new_event(
    postgres_url: str,
    fresh_schema: str,
    pg_store: PostgresRunStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries: list[str] = []
    read = pg_store._all

    async def counted(query: str, params: object = None) -> list[dict[str, object]]:
        queries.append(query)
        return await read(query, params)

    monkeypatch.setattr(pg_store, "_all", counted)
    other = PostgresRunStore.from_url(schema_url(postgres_url, schema=fresh_schema))
    await other.open()
    try:
        await pg_store.wait_for_work(0.01)  # starts listening
        for _ in range(100):
            if pg_store._listener.listening.is_set():
                break
            await asyncio.sleep(0.02)
        assert await pg_store.fetch_outbox(limit=10) == []
        before = len(queries)
        assert await pg_store.fetch_outbox(limit=10) == []
        assert len(queries) == before  # answered without a query
        await other.publish([{"id": "e-elsewhere", "detail": {}}], now=at(1))
        entries: list[OutboxEntry] = []
        for _ in range(50):  # the notification arrives, and the relay reads again
            if entries := await pg_store.fetch_outbox(limit=10):
                break
            await pg_store.wait_for_work(0.1)
        [entry] = entries
        assert entry.event["id"] == "e-elsewhere"
        await pg_store.mark_delivered([entry.seq], now=at(2))
        assert await pg_store.fetch_outbox(limit=10) == []
        await pg_store.publish([{"id": "e-here", "detail": {}}], now=at(3))
        assert [e.event["id"] for e in await pg_store.fetch_outbox(limit=10)] == ["e-here"]
        await create(pg_store, "r-1")
        run = await claim_one(pg_store, "r-1")
        await pg_store.fetch_outbox(limit=10)
        await pg_store.mark_delivered(
            [e.seq for e in await pg_store.fetch_outbox(limit=10)], now=at(4)
        )
        assert await pg_store.fetch_outbox(limit=10) == []
        await pg_store.commit(checkpoint(run, events=[{"id": "e-run", "detail": {}}]))
        assert [e.event["id"] for e in await pg_store.fetch_outbox(limit=10)] == ["e-run"]
    finally:
        await other.close()
