"""Group commit on PostgreSQL: concurrent checkpoints share one transaction, a savepoint
each; a rejected one fails alone, a lost connection fails them all and keeps nothing, and
fencing and the one winner per callback hold inside a group."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from cadenza.adapters.postgres import PostgresRunStore
from cadenza.adapters.postgres._writes import Conn
from cadenza.errors import CheckpointConflict, LeaseLost, StoreError, StoreUnavailable
from cadenza.ports.run_store import (
    CallbackResolution,
    CallbackStatus,
    Checkpoint,
    CommitResult,
    RunStatus,
)
from tests.contract._support import (
    at,
    callback,
    checkpoint,
    child,
    claim_one,
    create,
    new_run,
    step,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def store_url(postgres_url: str) -> str:
    return f"{postgres_url}?schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pg_store(store_url: str) -> AsyncIterator[PostgresRunStore]:
    store = PostgresRunStore.from_url(store_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def group_sizes(store: PostgresRunStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every group of two or more the store writes."""
    sizes: list[int] = []
    groups = store._groups
    write_group = groups._group

    async def recorded(batch: list[Any]) -> None:
        sizes.append(len(batch))
        await write_group(batch)

    monkeypatch.setattr(groups, "_group", recorded)
    return sizes


async def settle(*commits: Awaitable[CommitResult]) -> list[CommitResult | BaseException]:
    return await asyncio.gather(*commits, return_exceptions=True)


async def claimed(store: PostgresRunStore, *run_ids: str, owner: str = "w1") -> list[Any]:
    for run_id in run_ids:
        await create(store, run_id)
    return [await claim_one(store, run_id, owner=owner) for run_id in run_ids]


async def test_concurrent_checkpoints_leave_in_one_transaction(
    pg_store: PostgresRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = await claimed(pg_store, "r-1", "r-2", "r-3", "r-4", "r-5")
    sizes = group_sizes(pg_store, monkeypatch)
    results = await settle(*(pg_store.commit(checkpoint(r, ops=[step("1")])) for r in runs))
    assert results == [CommitResult(cancel_requested=False)] * 5
    assert sizes == [5]
    for run in runs:
        assert [op.op_id for op in await pg_store.load_journal(run.run_id)] == ["1"]
    # A lone checkpoint is written as before, outside any group.
    assert await pg_store.commit(checkpoint(runs[0], now=2, ops=[step("2")])) == CommitResult(
        cancel_requested=False
    )
    assert sizes == [5]


async def test_a_rejected_checkpoint_fails_alone_and_the_rest_of_its_group_commits(
    pg_store: PostgresRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["r-1", "r-2", "r-3", "r-4", "r-5"]
    r1, r2, r3, r4, r5 = await claimed(pg_store, *ids, owner="w1")
    await pg_store.commit(checkpoint(r3, callbacks=[callback("cb-3", "r-3")]))
    await pg_store.complete_callback(
        CallbackResolution("cb-3", CallbackStatus.SUCCEEDED, '"done"'), now=at(1)
    )
    await create(pg_store, "taken")
    # r-2's lease expires and another worker takes it: w1's epoch for it is stale.
    r2_now = await claim_one(pg_store, "r-2", owner="w2", now=40)
    assert r2_now.lease_epoch == r2.lease_epoch + 1
    sizes = group_sizes(pg_store, monkeypatch)
    results = await settle(
        pg_store.commit(checkpoint(r1, now=2, ops=[step("1")])),
        pg_store.commit(checkpoint(r2, now=2, ops=[step("1")])),  # stale epoch
        pg_store.commit(  # resolves a callback that was completed meanwhile
            checkpoint(
                r3,
                now=2,
                ops=[step("1")],
                resolutions=[CallbackResolution("cb-3", CallbackStatus.FAILED)],
            )
        ),
        pg_store.commit(  # starts a child whose run id is taken: a constraint refuses it
            checkpoint(r4, now=2, ops=[step("1")], children=[child(new_run("taken"))])
        ),
        pg_store.commit(checkpoint(r5, now=2, ops=[step("1")], suspend=True)),
    )
    assert sizes == [5]
    assert results[0] == CommitResult(cancel_requested=False)
    assert isinstance(results[1], LeaseLost)
    assert isinstance(results[2], CheckpointConflict)
    assert isinstance(results[3], StoreError) and not results[3].retryable
    assert results[4] == CommitResult(cancel_requested=False)
    # What the rejected ones wrote before they failed is gone; the others are all there.
    assert [op.op_id for op in await pg_store.load_journal("r-1")] == ["1"]
    assert await pg_store.load_journal("r-2") == []
    assert await pg_store.load_journal("r-3") == []
    assert await pg_store.load_journal("r-4") == []
    assert [op.op_id for op in await pg_store.load_journal("r-5")] == ["1"]
    assert (await pg_store.get_callback("cb-3")).status == CallbackStatus.SUCCEEDED
    assert (await pg_store.get_run("r-2")).lease_owner == "w2"
    assert (await pg_store.get_run("r-5")).status == RunStatus.SUSPENDED
    assert (await pg_store.get_run("r-3")).status == RunStatus.RUNNING


async def test_a_value_postgres_refuses_fails_alone_and_the_rest_of_its_group_commits(
    pg_store: PostgresRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refused statement aborts the whole transaction, not only its own checkpoint.
    runs = await claimed(pg_store, "r-1", "r-2", "r-3", "r-4")
    sizes = group_sizes(pg_store, monkeypatch)
    results = await settle(
        *(
            pg_store.commit(
                checkpoint(
                    r,
                    now=2,
                    ops=[step("1")],
                    state={"text": "nul \u0000 byte" if r.run_id == "r-3" else "fine"},
                )
            )
            for r in runs
        )
    )
    assert sizes == [4]
    assert isinstance(results[2], StoreError) and not results[2].retryable
    assert [results[0], results[1], results[3]] == [CommitResult(cancel_requested=False)] * 3
    for run in runs:
        kept = await pg_store.get_run(run.run_id)
        journal = [op.op_id for op in await pg_store.load_journal(run.run_id)]
        if run.run_id == "r-3":
            assert (kept.state, journal) == (run.state, [])
        else:
            assert (kept.state, journal) == ({"text": "fine"}, ["1"])


@pytest.mark.parametrize("when", ["mid-group", "before COMMIT"])
async def test_a_connection_lost_mid_group_fails_every_caller_and_keeps_nothing(
    pg_store: PostgresRunStore,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    runs = await claimed(pg_store, "r-1", "r-2", "r-3", "r-4")
    groups = pg_store._groups
    # One-statement checkpoints are sent in one pipeline; the connection dies while the
    # group is being sent, or once all of it is (COMMIT included) but before its answer.
    send: Callable[[Conn, Checkpoint], Awaitable[Any]] = groups._send
    written: list[str] = []

    async def kill(conn: Conn) -> None:
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as other:
            await other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

    async def killing(conn: Conn, cp: Checkpoint) -> Any:
        if when == "mid-group" and cp.run_id == "r-3":
            await kill(conn)
        cursor = await send(conn, cp)
        written.append(cp.run_id)
        if when == "before COMMIT" and cp.run_id == "r-4":
            await kill(conn)
        return cursor

    monkeypatch.setattr(groups, "_send", killing)
    results = await settle(
        *(pg_store.commit(checkpoint(r, ops=[step("1")], state={"n": 2})) for r in runs)
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    # A pipeline buffers what it sends, so the checkpoints after the kill may still be
    # handed to it; none of them is kept all the same.
    assert written[:2] == ["r-1", "r-2"]
    if when == "before COMMIT":
        assert written == ["r-1", "r-2", "r-3", "r-4"]
    for run in runs:
        assert await pg_store.load_journal(run.run_id) == []
        kept = await pg_store.get_run(run.run_id)
        assert (kept.state, kept.status, kept.updated_at) == (run.state, RunStatus.RUNNING, at(0))
    # The store carries on with a fresh connection.
    monkeypatch.setattr(groups, "_send", send)
    results = await settle(*(pg_store.commit(checkpoint(r, ops=[step("1")])) for r in runs))
    assert results == [CommitResult(cancel_requested=False)] * 4


async def test_fencing_holds_when_two_workers_commit_groups_at_once(
    pg_store: PostgresRunStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = PostgresRunStore.from_url(store_url)  # a second worker on the same database
    await other.open()
    try:
        mine = await claimed(pg_store, "r-1", "r-2", "r-3", "r-4", owner="w1")
        # w1 stalls past its lease on r-2 and r-3; w2 takes them over.
        theirs = [await claim_one(other, r, owner="w2", now=40) for r in ("r-2", "r-3")]
        await create(other, "r-5")
        theirs.append(await claim_one(other, "r-5", owner="w2", now=40))
        sizes_1 = group_sizes(pg_store, monkeypatch)
        sizes_2 = group_sizes(other, monkeypatch)
        stale, fresh = await asyncio.gather(
            settle(*(pg_store.commit(checkpoint(r, now=41, ops=[step("w1")])) for r in mine)),
            settle(*(other.commit(checkpoint(r, now=41, ops=[step("w2")])) for r in theirs)),
        )
        assert (sizes_1, sizes_2) == ([4], [3])
        assert stale[0] == stale[3] == CommitResult(cancel_requested=False)
        assert isinstance(stale[1], LeaseLost) and isinstance(stale[2], LeaseLost)
        assert fresh == [CommitResult(cancel_requested=False)] * 3
        for run_id, ops in {
            "r-1": ["w1"],
            "r-2": ["w2"],
            "r-3": ["w2"],
            "r-4": ["w1"],
            "r-5": ["w2"],
        }.items():
            assert [op.op_id for op in await pg_store.load_journal(run_id)] == ops
    finally:
        await other.close()


async def test_one_winner_when_a_callback_completion_races_a_checkpoint_in_a_group(
    pg_store: PostgresRunStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = PostgresRunStore.from_url(store_url)  # the completion comes from elsewhere
    await other.open()
    try:
        rounds = 8
        ids = [f"r-{i}" for i in range(rounds)]
        runs = await claimed(pg_store, *ids, "bystander")
        for run in runs[:rounds]:
            await pg_store.commit(
                checkpoint(run, callbacks=[callback(f"cb-{run.run_id}", run.run_id)])
            )
        sizes = group_sizes(pg_store, monkeypatch)
        winners = {"checkpoint": 0, "completion": 0}
        for n, run in enumerate(runs[:rounds]):
            cb = f"cb-{run.run_id}"
            timed_out = checkpoint(
                run,
                now=2 + n,
                ops=[step("2")],
                resolutions=[CallbackResolution(cb, CallbackStatus.TIMED_OUT)],
            )
            bystander = checkpoint(runs[-1], now=2 + n, ops=[step(f"b{n}")])
            (own, _), completed = await asyncio.gather(
                settle(pg_store.commit(timed_out), pg_store.commit(bystander)),
                other.complete_callback(
                    CallbackResolution(cb, CallbackStatus.SUCCEEDED, '"yes"'), now=at(2 + n)
                ),
            )
            status = (await pg_store.get_callback(cb)).status
            journal = [op.op_id for op in await pg_store.load_journal(run.run_id)]
            if completed:
                assert isinstance(own, CheckpointConflict), own
                assert (status, journal) == (CallbackStatus.SUCCEEDED, [])
                winners["completion"] += 1
            else:
                assert own == CommitResult(cancel_requested=False)
                assert (status, journal) == (CallbackStatus.TIMED_OUT, ["2"])
                winners["checkpoint"] += 1
        assert sum(winners.values()) == rounds
        assert sizes == [2] * rounds  # every checkpoint raced from inside a group
        assert len(await pg_store.load_journal("bystander")) == rounds
    finally:
        await other.close()


async def test_one_writer_never_strands_the_next_checkpoint(store_url: str) -> None:
    # With room for one writer (pool_max=2), the checkpoint a caller sends as soon as its
    # previous one is answered must find the writer gone, not wait for someone else's.
    store = PostgresRunStore.from_url(f"{store_url}&pool_max=2")
    await store.open()
    try:
        [run] = await claimed(store, "r-1")
        async with asyncio.timeout(10):  # awaited in this task: no hop that would hide it
            for n in range(1, 30):
                await store.commit(checkpoint(run, now=n, ops=[step(str(n))]))
        assert len(await store.load_journal("r-1")) == 29
    finally:
        await store.close()
