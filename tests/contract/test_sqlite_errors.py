"""The SQLite store translates SQLite's errors at its boundary into cadenza's error tree,
most specific first, each keeping the SQLite error as its cause: a taken key, a database
locked by another process, a read-only or damaged file, one that cannot be opened, a full
disk. (PostgreSQL's translation is tested in test_postgres_store.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.errors import RunAlreadyExists, StoreError, StoreFull, StoreUnavailable
from cadenza.history import HistoryEventType
from tests.contract._support import (
    checkpoint,
    child,
    claim_one,
    create,
    new_run,
    started,
    step,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRunStore]:
    opened = SqliteRunStore(
        tmp_path / "cadenza.db", synchronous="NORMAL", busy_timeout=timedelta(milliseconds=50)
    )
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def pragma(store: SqliteRunStore, statement: str) -> None:
    """Set a pragma on the store's own connection (pragmas are per connection)."""
    conn = store._writer._conn
    assert conn is not None
    conn.execute(statement)


async def test_a_taken_run_id_is_run_already_exists(store: SqliteRunStore) -> None:
    await create(store, "r-1")
    with pytest.raises(RunAlreadyExists, match="r-1") as caught:
        await create(store, "r-1")
    assert caught.value.run_id == "r-1"
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)


async def test_a_taken_key_in_a_checkpoint_is_a_final_store_error(store: SqliteRunStore) -> None:
    await create(store, "r-taken", idempotency_key="order-1")
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    for kid, what in (
        (new_run("r-taken"), "run id"),
        (new_run("r-new", idempotency_key="order-1"), "idempotency key"),
    ):
        with pytest.raises(StoreError, match=f"the {what} is taken") as caught:
            await store.commit(checkpoint(run, ops=[step("1")], children=[child(kid)]))
        assert type(caught.value) is StoreError and not caught.value.retryable
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert await store.load_journal("r-1") == []  # nothing of the checkpoint was stored


async def test_a_fork_onto_a_taken_run_id_is_refused(store: SqliteRunStore) -> None:
    await create(store, "r-1")
    with pytest.raises(StoreError, match="the run id is taken") as caught:
        await store.fork_run(new_run("r-1"), [started()], [step("1")])
    assert not caught.value.retryable
    assert await store.load_journal("r-1") == []


async def test_a_database_locked_by_another_process_is_a_retryable_store_error(
    store: SqliteRunStore, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "cadenza.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        with pytest.raises(StoreError, match="locked by another process") as caught:
            await create(store, "r-1")
        assert not isinstance(caught.value, StoreUnavailable)  # a wait, not an outage
        assert caught.value.retryable
        cause = caught.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause)
        other.execute("ROLLBACK")
    finally:
        other.close()
    await create(store, "r-1")  # the lock is gone: the same write goes through
    assert [e.type for e in await store.history("r-1")] == [HistoryEventType.EXECUTION_STARTED]


async def test_a_read_only_database_is_a_final_store_error(store: SqliteRunStore) -> None:
    pragma(store, "PRAGMA query_only = ON")
    with pytest.raises(StoreError, match="read-only") as caught:
        await create(store, "r-1")
    assert not caught.value.retryable
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_a_full_disk_is_store_full(store: SqliteRunStore) -> None:
    await create(store, "r-1")
    pragma(store, "PRAGMA max_page_count = 1")  # no new page: as a full disk
    with pytest.raises(StoreFull, match="full") as caught:
        await store.create_run(new_run("r-2", input='"' + "x" * 100_000 + '"'), started())
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert caught.value.__cause__.sqlite_errorcode == sqlite3.SQLITE_FULL


async def test_a_file_that_is_not_a_database_is_a_final_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages of a SQLite database" * 100)
    store = SqliteRunStore(path)
    with pytest.raises(StoreError, match="not a cadenza database") as caught:
        await store.open()
    assert not isinstance(caught.value, StoreUnavailable) and not caught.value.retryable
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    await store.close()


async def test_a_file_that_cannot_be_opened_is_store_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    store = SqliteRunStore(folder)
    with pytest.raises(StoreUnavailable, match="cannot be read or written") as caught:
        await store.open()
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    await store.close()
