"""What only the DynamoDB store has to prove: checkpoints past DynamoDB's item (400 KB) and
transaction (100 items, 4 MB) limits are stored whole, never refused; vendor errors reach
callers as cadenza's errors; the store is chosen by URL and needs boto3 only when used."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cadenza.adapters.dynamodb import DynamoDbRunStore
from cadenza.adapters.dynamodb._table import STASH_ABOVE
from cadenza.errors import (
    CheckpointConflict,
    ConfigurationError,
    LeaseLost,
    StoreError,
    StoreUnavailable,
)
from cadenza.history import HistoryEventType
from cadenza.journal import OpStatus
from cadenza.ports.run_store import (
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Redrive,
    RunOutcome,
    RunStatus,
)
from tests.contract._support import (
    at,
    callback,
    checkpoint,
    child,
    claim,
    claim_one,
    create,
    envelope,
    new_run,
    note,
    step,
)

pytest.importorskip("boto3", reason="boto3 (the aws extra) is not installed")

MB = 1024 * 1024


@pytest.fixture(params=["s3", "chunks"])
async def store(
    request: pytest.FixtureRequest, dynamodb_store: Callable[..., DynamoDbRunStore]
) -> AsyncIterator[DynamoDbRunStore]:
    """Large records claim-checked to S3, or split into chunks in the table itself."""
    opened = dynamodb_store(artifacts=request.param == "s3")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def by_id(cb: CallbackRecord) -> str:
    return cb.callback_id


def big(n: int, char: str = "x") -> str:
    return '"' + char * n + '"'


async def items_of(store: DynamoDbRunStore, run_id: str) -> list[dict[str, Any]]:
    return await store.table.partition(f"R#{run_id}", "!", "~")


async def test_a_record_over_the_item_limit_is_stored_whole(store: DynamoDbRunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    record = step("1", result=big(MB, "é"))  # 2 MB of UTF-8: five times the item limit
    await store.commit(checkpoint(run, ops=[record], state={"notes": "n" * 600_000}))
    assert await store.load_journal("r-1") == [record]
    assert (await store.get_run("r-1")).state == {"notes": "n" * 600_000}
    assert all(len(str(i)) < 400_000 for i in await items_of(store, "r-1"))


async def test_a_checkpoint_over_the_transaction_limits_is_applied_whole(
    store: DynamoDbRunStore,
) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    many = [step(f"1.{i}") for i in range(300)]  # 300 records: three times the item limit
    heavy = [step(f"2.{i}", result=big(250_000)) for i in range(20)]  # 5 MB altogether
    events = [note(HistoryEventType.STEP_SUCCEEDED, f"1.{i}") for i in range(300)]
    await store.commit(checkpoint(run, ops=many + heavy, history=events))
    journal = await store.load_journal("r-1")
    assert journal == many + heavy
    history = await store.history("r-1")
    assert [e.seq for e in history] == list(range(1, 302))
    assert [e.op_id for e in history[1:]] == [f"1.{i}" for i in range(300)]
    assert [e.seq for e in await store.history("r-1", after_seq=299)] == [300, 301]

    # Records written as pages are updated by later checkpoints like any other.
    failed = step("1.7", status=OpStatus.FAILED)
    await store.commit(checkpoint(run, now=2, ops=[failed, step("3")]))
    journal = await store.load_journal("r-1")
    assert journal[7] == failed and journal[-1] == step("3") and len(journal) == 321


async def test_a_retry_drops_paged_records(store: DynamoDbRunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, ops=[step(f"1.{i}") for i in range(150)]))
    await store.commit(checkpoint(run, now=2, outcome=RunOutcome(RunStatus.FAILED, result=None)))
    ended = await store.get_run("r-1")
    event = note(HistoryEventType.EXECUTION_STARTED)
    redo = step("1.3", status=OpStatus.STARTED)
    await store.redrive_runs(
        [Redrive("r-1", ended.lease_epoch, event, drop=["1.1", "1.2"], reset=[redo])], now=at(3)
    )
    journal = {op.op_id: op for op in await store.load_journal("r-1")}
    assert "1.1" not in journal and "1.2" not in journal
    assert journal["1.3"] == redo and len(journal) == 148
    # A record dropped and written again is there again.
    run = await claim_one(store, "r-1", now=4)
    await store.commit(checkpoint(run, now=5, ops=[step("1.1")]))
    assert "1.1" in {op.op_id for op in await store.load_journal("r-1")}


async def test_a_fork_of_a_long_journal_is_written_whole(store: DynamoDbRunStore) -> None:
    journal = [step(f"1.{i}") for i in range(250)]
    fork = new_run("r-fork", created=1)
    await store.fork_run(fork, [note(HistoryEventType.EXECUTION_STARTED)], journal)
    assert await store.load_journal("r-fork") == journal
    assert (await store.get_run("r-fork")).run_id == "r-fork"


async def test_a_refused_large_checkpoint_leaves_no_trace(store: DynamoDbRunStore) -> None:
    await create(store, "r-1")
    stale = await claim_one(store, "r-1", owner="w1", now=0, lease=5)
    await claim_one(store, "r-1", owner="w2", now=6)
    with pytest.raises(LeaseLost):
        await store.commit(
            checkpoint(stale, now=7, ops=[step(f"1.{i}", result=big(50_000)) for i in range(120)])
        )
    assert await store.load_journal("r-1") == []


async def test_a_large_history_page_is_stashed(store: DynamoDbRunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    detail = "d" * (STASH_ABOVE + 10)
    await store.commit(
        checkpoint(run, history=[note(HistoryEventType.STEP_SUCCEEDED, "1", text=detail)])
    )
    [_, event] = await store.history("r-1")
    assert event.details == {"text": detail}


async def test_a_checkpoint_with_more_new_items_than_a_transaction_holds_is_whole(
    store: DynamoDbRunStore,
) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    callbacks = [callback(f"cb-{i}", "r-1") for i in range(120)]  # 240 items with locators
    children = [child(new_run(f"r-kid-{i}", parent_run_id="r-1", created=1)) for i in range(40)]
    events = [{**envelope(f"e-{i}"), "run_id": "r-1"} for i in range(30)]
    await store.commit(
        checkpoint(run, ops=[step("1")], callbacks=callbacks, children=children, events=events)
    )
    assert sorted(await store.load_callbacks("r-1"), key=by_id) == sorted(callbacks, key=by_id)
    assert await store.load_journal("r-1") == [step("1")]
    assert len(await store.list_runs(parent_run_id="r-1", limit=100)) == 40
    assert [e.event["id"] for e in await store.fetch_outbox(limit=100)] == [
        f"e-{i}" for i in range(30)
    ]
    assert len(await claim(store, now=2, owner="w2")) == 40  # the children are runnable
    assert await store.table.partition("R#r-1", "K~I#", "K~I#~") == []  # nothing left over


async def test_a_large_checkpoint_cut_short_is_finished_by_the_next_reader(
    store: DynamoDbRunStore, dynamodb_store: Callable[..., DynamoDbRunStore]
) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")

    async def dies(run_id: str, item: Any) -> None:
        raise ConnectionError("the worker died right after the transaction")

    store._finish = dies  # type: ignore[method-assign]
    callbacks = [callback(f"cb-{i}", "r-1") for i in range(110)]
    events = [envelope("e-1")]
    with pytest.raises(ConnectionError):
        await store.commit(checkpoint(run, callbacks=callbacks, events=events, suspend=True))
    other = DynamoDbRunStore(
        store.table.name,
        region=store.table.region,
        endpoint_url=store.table.endpoint_url,
        artifacts=store.table.artifacts,
    )
    assert (await other.get_run("r-1")).status == RunStatus.SUSPENDED  # it did commit
    finished = await other.load_callbacks("r-1")  # finished on reading
    assert sorted(finished, key=by_id) == sorted(callbacks, key=by_id)
    assert [e.event["id"] for e in await other.fetch_outbox(limit=10)] == ["e-1"]
    await other.load_callbacks("r-1")
    assert len(await other.fetch_outbox(limit=10)) == 1  # finished once


async def test_a_large_checkpoint_with_a_taken_child_id_writes_nothing(
    store: DynamoDbRunStore,
) -> None:
    await create(store, "r-1")
    await create(store, "r-taken")
    run = await claim_one(store, "r-1")
    callbacks = [callback(f"cb-{i}", "r-1") for i in range(110)]
    with pytest.raises(StoreError, match="'r-taken' is taken"):
        await store.commit(
            checkpoint(run, callbacks=callbacks, children=[child(new_run("r-taken"))])
        )
    assert await store.load_callbacks("r-1") == []
    assert (await store.get_run("r-1")).lease_epoch == run.lease_epoch


# --- races decided by the transaction's conditions ---------------------------------------------


async def test_a_claim_between_read_and_write_loses_the_lease(store: DynamoDbRunStore) -> None:
    await create(store, "r-1")
    stale = await claim_one(store, "r-1", owner="w1", now=0, lease=5)
    transact = store.table.transact
    raced = False

    async def claim_first(writes: Any) -> None:
        nonlocal raced
        if not raced:  # another worker claims the run after the checkpoint read it
            raced = True
            await claim_one(store, "r-1", owner="w2", now=6)
        await transact(writes)

    store.table.transact = claim_first  # type: ignore[method-assign]
    with pytest.raises(LeaseLost, match="no longer current"):
        await store.commit(checkpoint(stale, now=7, ops=[step("1")]))
    assert raced and await store.load_journal("r-1") == []


async def test_a_completion_between_read_and_write_conflicts(store: DynamoDbRunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, callbacks=[callback("cb-1", "r-1")]))
    transact = store.table.transact
    raced = False

    async def complete_first(writes: Any) -> None:
        nonlocal raced
        if not raced:
            raced = True
            done = CallbackResolution("cb-1", CallbackStatus.SUCCEEDED, result='"ok"')
            assert await store.complete_callback(done, now=at(2))
        await transact(writes)

    store.table.transact = complete_first  # type: ignore[method-assign]
    timeout = CallbackResolution("cb-1", CallbackStatus.TIMED_OUT)
    with pytest.raises(CheckpointConflict):
        await store.commit(checkpoint(run, now=3, resolutions=[timeout], ops=[step("2")]))
    assert (await store.get_callback("cb-1")).status == CallbackStatus.SUCCEEDED
    assert await store.load_journal("r-1") == []


async def test_concurrent_completions_have_exactly_one_winner(store: DynamoDbRunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, callbacks=[callback("cb-1", "r-1")], suspend=True))
    others = [
        store,
        *(
            DynamoDbRunStore(
                store.table.name, region=store.table.region, endpoint_url=store.table.endpoint_url
            )
            for _ in range(3)
        ),
    ]
    results = await asyncio.gather(
        *(
            s.complete_callback(
                CallbackResolution("cb-1", CallbackStatus.SUCCEEDED, result=f'"{i}"'), now=at(5)
            )
            for i, s in enumerate(others * 2)
        )
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert (await store.get_callback("cb-1")).result == f'"{winner}"'
    assert (await store.get_run("r-1")).status == RunStatus.PENDING


# --- errors at the boundary ------------------------------------------------------------------


async def test_throttling_becomes_store_unavailable() -> None:
    from botocore.stub import Stubber

    store = DynamoDbRunStore("t", region="us-east-1", endpoint_url="http://127.0.0.1:9")
    with Stubber(store.table.client) as stub:
        stub.add_client_error("query", "ProvisionedThroughputExceededException", "slow down", 400)
        with pytest.raises(StoreUnavailable, match="not taking requests"):
            await store.get_run("r-1")
        stub.add_client_error("query", "ResourceNotFoundException", "no table", 400)
        with pytest.raises(ConfigurationError, match="does not exist"):
            await store.get_run("r-1")
        stub.add_client_error("query", "ValidationException", "bad", 400)
        with pytest.raises(StoreError) as refused:
            await store.get_run("r-1")
        assert not refused.value.retryable


async def test_an_unreachable_endpoint_is_store_unavailable() -> None:
    store = DynamoDbRunStore("t", region="us-east-1", endpoint_url="http://127.0.0.1:9")
    store.table.client.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(StoreUnavailable):
        await store.get_run("r-1")


# --- choosing the store ----------------------------------------------------------------------


def test_the_store_is_chosen_by_url() -> None:
    from cadenza.config import create_store

    store = create_store("dynamodb://runs?region=eu-west-1&endpoint_url=http://127.0.0.1:8000")
    assert isinstance(store, DynamoDbRunStore)
    assert (store.table.name, store.table.region) == ("runs", "eu-west-1")
    assert store.table.endpoint_url == "http://127.0.0.1:8000"
    with pytest.raises(ConfigurationError, match="unknown option"):
        create_store("dynamodb://runs?regoin=eu-west-1")
    with pytest.raises(ConfigurationError, match="needs a table"):
        create_store("dynamodb://")


def test_cadenza_imports_without_boto3_and_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "import cadenza, cadenza.config\n"
        "from cadenza.errors import MissingDependency\n"
        "for url in ('dynamodb://t', 's3://b/p'):\n"
        "    try:\n"
        "        make = cadenza.config.create_store if url[0] == 'd' else None\n"
        "        (make or cadenza.config.create_artifacts)(url)\n"
        "    except MissingDependency as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.count("pip install 'cadenza[aws]'") == 2, out
