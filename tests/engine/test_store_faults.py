"""A store that runs out of room: every waiting caller hears of it, nothing is half-written,
the worker lets go of the run it could not checkpoint, and the run finishes once there is
room again.

The disk fills by way of SQLite's ``max_page_count``, set on the store's own connection
(the pragma is per connection): a write that needs a new page then fails with SQLITE_FULL,
as it does on a full disk. Raising the limit is the disk getting room again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cadenza import RunStatus, Worker, open_engine
from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.engine.activation import ActivationResult
from cadenza.engine.engine import Engine
from cadenza.errors import StoreFull
from cadenza.journal import OpStatus
from cadenza.ports.run_store import Checkpoint, CommitResult, RunRecord
from cadenza.testing import TestEnvironment
from tests.contract._support import checkpoint, claim_one, create, step
from tests.engine.fault_workflows import BLOB, CALLS, expected, hoard


def fill(store: SqliteRunStore) -> None:
    """No new page from now on: SQLite clamps the limit to the pages the file has."""
    conn = store._writer._conn
    assert conn is not None
    conn.execute("PRAGMA max_page_count = 1")


def make_room(store: SqliteRunStore) -> None:
    conn = store._writer._conn
    assert conn is not None
    conn.execute("PRAGMA max_page_count = 1073741823")


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def fill_after(store: SqliteRunStore, op_name: str) -> Callable[[RunRecord, Checkpoint], None]:
    """A checkpoint listener that fills the disk once ``op_name`` has been committed."""

    def listener(run: RunRecord, cp: Checkpoint) -> None:
        if any(op.name == op_name and op.status == OpStatus.SUCCEEDED for op in cp.ops):
            fill(store)

    return listener


# --- the writer ----------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRunStore]:
    opened = SqliteRunStore(tmp_path / "cadenza.db", synchronous="NORMAL")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_every_caller_of_a_group_commit_hears_that_the_disk_is_full(
    store: SqliteRunStore,
) -> None:
    runs = []
    for i in range(5):
        await create(store, f"r-{i}")
        runs.append(await claim_one(store, f"r-{i}"))
    big = '"' + "x" * BLOB + '"'
    fill(store)

    # Five checkpoints in one turn of the loop: one transaction, one commit.
    commits = [store.commit(checkpoint(run, ops=[step("1", result=big)])) for run in runs]
    outcomes = await asyncio.wait_for(asyncio.gather(*commits, return_exceptions=True), 10)

    assert all(isinstance(o, StoreFull) for o in outcomes), outcomes
    message = str(outcomes[0])
    assert f"the disk holding {store.path} is full" in message
    assert "nothing of this write was stored" in message
    assert "resume by themselves" in message
    assert isinstance(outcomes[0].__cause__, sqlite3.OperationalError)
    for run in runs:
        assert await store.load_journal(run.run_id) == []

    make_room(store)
    commits = [store.commit(checkpoint(run, ops=[step("1", result=big)])) for run in runs]
    outcomes = await asyncio.wait_for(asyncio.gather(*commits, return_exceptions=True), 10)
    assert all(isinstance(o, CommitResult) for o in outcomes), outcomes
    for run in runs:
        [op] = await store.load_journal(run.run_id)
        assert op.result == big
    assert integrity(store.path) == "ok"


async def test_a_caller_is_told_of_success_only_when_its_write_is_stored(
    store: SqliteRunStore,
) -> None:
    """Small writes that fit share the group commit with one that does not: whatever SQLite
    keeps or rolls back, each caller's answer matches what the file holds."""
    runs = []
    for i in range(4):
        await create(store, f"r-{i}")
        runs.append(await claim_one(store, f"r-{i}", lease=30))
    fill(store)

    def renew(run: RunRecord, seconds: float) -> Awaitable[bool]:
        return store.renew_lease(
            run.run_id,
            owner="w1",
            epoch=run.lease_epoch,
            lease_until=run.created_at + timedelta(seconds=seconds),
        )

    big = checkpoint(runs[1], ops=[step("1", result='"' + "x" * BLOB + '"')])
    calls = [renew(runs[0], 100), store.commit(big), renew(runs[2], 200), renew(runs[3], 300)]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)

    assert isinstance(outcomes[1], StoreFull)
    assert await store.load_journal(runs[1].run_id) == []
    for index, seconds in ((0, 100), (2, 200), (3, 300)):
        stored = (await store.get_run(runs[index].run_id)).lease_expires_at
        if outcomes[index] is True:
            assert stored == runs[index].created_at + timedelta(seconds=seconds)
        else:
            assert isinstance(outcomes[index], StoreFull)
            assert stored == runs[index].lease_expires_at
    make_room(store)
    assert integrity(store.path) == "ok"


# --- a worker --------------------------------------------------------------------------------


@dataclass
class Call:
    run_id: str
    epoch: int
    at: float


class RecordingStore(SqliteRunStore):
    """Remembers lease renewals, releases and refused commits, with when they happened."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.renewals: list[Call] = []
        self.releases: list[Call] = []
        self.refused: list[Call] = []

    async def renew_lease(
        self, run_id: str, *, owner: str, epoch: int, lease_until: datetime
    ) -> bool:
        self.renewals.append(Call(run_id, epoch, time.monotonic()))
        return await super().renew_lease(run_id, owner=owner, epoch=epoch, lease_until=lease_until)

    async def release_lease(self, run_id: str, *, owner: str, epoch: int) -> None:
        self.releases.append(Call(run_id, epoch, time.monotonic()))
        await super().release_lease(run_id, owner=owner, epoch=epoch)

    async def commit(self, cp: Checkpoint) -> CommitResult:
        try:
            return await super().commit(cp)
        except StoreFull:
            self.refused.append(Call(cp.run_id, cp.expected_epoch, time.monotonic()))
            raise


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = await open_engine(
        store=RecordingStore(tmp_path / "cadenza.db"),
        artifacts=f"file://{tmp_path / 'artifacts'}",
        secret=b"store-faults-secret-0123456789",
        lease=timedelta(seconds=0.6),  # renewed every 0.2 s
    )
    try:
        yield engine
    finally:
        await engine.close()


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_worker_lets_go_while_the_disk_is_full_and_finishes_once_there_is_room(
    engine: Engine,
) -> None:
    store = engine.store
    assert isinstance(store, RecordingStore)
    engine.subscribe(fill_after(store, "blob-2"))
    run = await engine.start(hoard, {"steps": 6})
    worker = Worker(engine, poll_interval=0.05, max_backoff=0.4)
    aborted: list[tuple[ActivationResult, float]] = []
    worker.on_result = lambda r: aborted.append((r, time.monotonic())) if r.aborted else None
    stop = asyncio.Event()
    working = asyncio.create_task(worker.run(stop=stop, grace=1.0))
    try:

        async def refused_thrice() -> bool:
            assert not working.done(), working
            return len(aborted) >= 3

        # The worker keeps trying, with backoff, while the disk stays full; it stays alive.
        await wait_until(refused_thrice, 15, "three refused activations")
        await asyncio.sleep(1.0)  # longer than the lease: a renewal would show
        assert not working.done()

        make_room(store)

        async def succeeded() -> bool:
            return (await store.get_run(run.run_id)).status == RunStatus.SUCCEEDED

        await wait_until(succeeded, 15, "the run to finish once there is room")
    finally:
        stop.set()
        await asyncio.wait_for(working, 10)

    assert await engine.result(run.run_id) == expected(6)
    # No recorded outcome lost or repeated: the steps committed before the disk filled ran
    # once; the one whose checkpoint was refused ran again, as at-least-once promises.
    journal = {op.name: op for op in await store.load_journal(run.run_id)}
    assert [journal[f"blob-{i}"].status for i in range(6)] == [OpStatus.SUCCEEDED] * 6
    assert [CALLS[f"{run.run_id}/blob-{i}"] for i in range(3)] == [1, 1, 1]
    assert CALLS[f"{run.run_id}/blob-3"] >= 3
    assert [CALLS[f"{run.run_id}/blob-{i}"] for i in (4, 5)] == [1, 1]
    assert integrity(store.path) == "ok"

    # The run whose checkpoint was refused: its lease was never renewed afterwards, and
    # the worker handed it back.
    refused_epochs = {c.epoch for c in store.refused}
    assert len(refused_epochs) >= 3
    for result, ended in aborted:
        assert isinstance(result.aborted, StoreFull)
        epoch = max(c.epoch for c in store.refused if c.at <= ended)  # each claim bumps it
        late = [c for c in store.renewals if c.epoch == epoch and c.at > ended]
        assert late == [], f"lease of epoch {epoch} renewed after its activation aborted"
    assert {c.epoch for c in store.releases} >= refused_epochs


# --- drive, as `cadenza run` uses it ---------------------------------------------------------


async def test_drive_stops_with_a_clear_error_when_the_disk_fills() -> None:
    async with TestEnvironment() as env:
        store = env.engine.store
        assert isinstance(store, SqliteRunStore)
        env.engine.subscribe(fill_after(store, "blob-1"))
        with pytest.raises(StoreFull) as caught:
            await asyncio.wait_for(env.run(hoard, {"steps": 4}), 20)
        [run] = await store.list_runs(workflow="t-hoard")
        message = str(caught.value)
        assert f"run {run.run_id} stopped at its last checkpoint, nothing lost" in message
        assert f"the disk holding {store.path} is full" in message
        assert "'cadenza worker' resumes it once the store is back" in message
        assert caught.value.exit_code == 6

        # Handed back at once, so a worker resumes it without waiting out a lease.
        run = await store.get_run(run.run_id)
        assert run.status == RunStatus.PENDING and run.lease_owner is None
        assert sorted(op.name for op in await store.load_journal(run.run_id)) == [
            "blob-0",
            "blob-1",
        ]

        make_room(store)
        finished = await asyncio.wait_for(env.resume(run), 20)
        assert finished.status == RunStatus.SUCCEEDED
        assert await env.result(finished) == expected(4)
        assert [CALLS[f"{run.run_id}/blob-{i}"] for i in range(2)] == [1, 1]
        assert integrity(store.path) == "ok"
