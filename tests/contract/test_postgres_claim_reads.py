"""What a PostgreSQL claim reads for the activations it starts, and the step checkpoint
that leaves the run row alone: neither may hand an activation a journal older than the
tables, nor let a fenced-off writer through."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from cadenza.adapters.postgres import PostgresRunStore
from cadenza.errors import LeaseLost
from cadenza.ports.run_store import CallbackResolution, CallbackStatus
from tests.contract._support import (
    at,
    callback,
    checkpoint,
    claim,
    claim_one,
    create,
    step,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[PostgresRunStore]:
    store = PostgresRunStore.from_url(f"{postgres_url}?schema=t_{uuid.uuid4().hex[:12]}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def tables_unreachable(store: PostgresRunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("read from the tables")

    monkeypatch.setattr(store, "_connection", refuse)


async def test_a_claim_reads_the_journals_its_activations_load_once(
    pg_store: PostgresRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(pg_store, "r-1")
    await create(pg_store, "r-2")
    first = await claim_one(pg_store, "r-1")
    await pg_store.commit(
        checkpoint(first, ops=[step("1")], callbacks=[callback("cb-1", "r-1")], suspend=True)
    )
    await pg_store.complete_callback(
        CallbackResolution("cb-1", CallbackStatus.SUCCEEDED, '"yes"'), now=at(1)
    )
    claimed = await claim(pg_store, now=2)
    assert sorted(r.run_id for r in claimed) == ["r-1", "r-2"]
    with monkeypatch.context() as patch:
        tables_unreachable(pg_store, patch)
        ops, callbacks = await pg_store.load_activation("r-1")
        assert [op.op_id for op in ops] == ["1"]
        assert [(cb.callback_id, cb.status) for cb in callbacks] == [
            ("cb-1", CallbackStatus.SUCCEEDED)
        ]
        # A first claim is not read ahead (the engine reads nothing then, but a fork must).
        with pytest.raises(AssertionError, match="read from the tables"):
            await pg_store.load_activation("r-2")
        # Given out once: the engine reloads after a conflict, and must read afresh.
        with pytest.raises(AssertionError, match="read from the tables"):
            await pg_store.load_activation("r-1")
    assert [op.op_id for op in (await pg_store.load_activation("r-1"))[0]] == ["1"]


async def test_what_a_claim_read_is_not_given_out_after_the_run_committed(
    pg_store: PostgresRunStore,
) -> None:
    await create(pg_store, "r-1")
    run = await claim_one(pg_store, "r-1")
    await pg_store.commit(checkpoint(run, ops=[step("1")]))
    ops, _ = await pg_store.load_activation("r-1")
    assert [op.op_id for op in ops] == ["1"]


async def test_a_step_checkpoint_leaves_the_run_row_alone_and_is_still_fenced(
    pg_store: PostgresRunStore,
) -> None:
    await create(pg_store, "r-1")
    run = await claim_one(pg_store, "r-1")
    await pg_store.commit(checkpoint(run, now=5, ops=[step("1")]))
    assert (await pg_store.get_run("r-1")).updated_at == at(0)  # the claim's, untouched
    # The lease runs out and another worker claims the run: the old holder's step is refused.
    await claim_one(pg_store, "r-1", owner="w2", now=40)
    with pytest.raises(LeaseLost):
        await pg_store.commit(checkpoint(run, now=41, ops=[step("2")]))
    assert [op.op_id for op in await pg_store.load_journal("r-1")] == ["1"]
