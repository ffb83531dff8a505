"""How the PostgreSQL store writes a run's row: a checkpoint that changes only the run's
state is updated in place (no new entry in any index of the table), and completing a
callback wakes the workers only when it made the run runnable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from cadenza.adapters.postgres import PostgresRunStore
from cadenza.ports.run_store import CallbackResolution, CallbackStatus, RunStatus
from tests.contract._support import at, callback, checkpoint, claim_one, create

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[PostgresRunStore]:
    # One connection: the statistics read below are those of the backend that wrote.
    store = PostgresRunStore.from_url(
        f"{postgres_url}?schema=t_{uuid.uuid4().hex[:12]}&pool_min=1&pool_max=1"
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _updates(store: PostgresRunStore) -> tuple[int, int]:
    """(updates of the runs table, of them in place), once the writer reported them."""
    await store._one("SELECT pg_stat_force_next_flush()")
    for _ in range(50):
        await asyncio.sleep(0.05)
        row = await store._one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE schemaname = %s AND relname = 'runs'",
            (store.schema,),
        )
        if row is not None and row["n_tup_upd"]:
            return int(row["n_tup_upd"]), int(row["n_tup_hot_upd"])
    raise AssertionError("PostgreSQL reported no updates of the runs table")


async def test_a_checkpoint_that_changes_only_the_state_updates_the_row_in_place(
    pg_store: PostgresRunStore,
) -> None:
    await create(pg_store, "r-1")
    run = await claim_one(pg_store, "r-1")  # a new status: a new row version
    await pg_store.commit(checkpoint(run, now=5, state={"agentId": "r-1", "status": "WORKING"}))
    assert await _updates(pg_store) == (2, 1)
    kept = await pg_store.get_run("r-1")
    assert (kept.state["status"], kept.updated_at) == ("WORKING", at(5))


async def _notifications(postgres_url: str, store: PostgresRunStore) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    await conn.execute(f"LISTEN {store.channel}")
    return conn


async def _heard(conn: psycopg.AsyncConnection, wait: float = 0.3) -> int:
    heard = 0
    async for _ in conn.notifies(timeout=wait):
        heard += 1
    return heard


async def test_completing_a_callback_wakes_workers_only_when_the_run_can_go_on(
    pg_store: PostgresRunStore, postgres_url: str
) -> None:
    await create(pg_store, "r-1")
    run = await claim_one(pg_store, "r-1")
    await pg_store.commit(checkpoint(run, callbacks=[callback("cb-1", "r-1")]))
    listener = await _notifications(postgres_url, pg_store)
    try:
        # The run is running: its worker sees the wake-up at its next checkpoint.
        done = CallbackResolution("cb-1", CallbackStatus.SUCCEEDED, '"yes"')
        assert await pg_store.complete_callback(done, now=at(2))
        assert await _heard(listener) == 0
        await pg_store.commit(checkpoint(run, now=3, suspend=True))
        assert await _heard(listener) == 1  # that checkpoint left the run runnable
        assert (await pg_store.get_run("r-1")).status == RunStatus.PENDING
        # A parked run: the completion itself makes it runnable and says so.
        run = await claim_one(pg_store, "r-1", now=4)
        await pg_store.commit(checkpoint(run, now=5, callbacks=[callback("cb-2", "r-1")]))
        await pg_store.commit(checkpoint(run, now=6, suspend=True))
        assert await _heard(listener) == 0
        done = CallbackResolution("cb-2", CallbackStatus.SUCCEEDED, '"yes"')
        assert await pg_store.complete_callback(done, now=at(7))
        assert await _heard(listener) == 1
        assert (await pg_store.get_run("r-1")).status == RunStatus.PENDING
    finally:
        await listener.close()
