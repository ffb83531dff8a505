"""The run-store contract for retry and fork: ``redrive_runs`` puts ended runs back to work
atomically and only as planned; ``fork_run`` creates a run with the journal it starts
from; forks keep their origin and callbacks their payload schema."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.adapters.sqlite._schema import MIGRATIONS
from cadenza.errors import ErrorInfo, RunNotFound, RunStateError
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus
from cadenza.ports.run_store import (
    CallbackResolution,
    CallbackStatus,
    Redrive,
    RunOrigin,
    RunOutcome,
    RunRecord,
    RunStatus,
    RunStore,
)
from tests.contract._support import (
    at,
    callback,
    cancel_tree,
    checkpoint,
    claim_one,
    create,
    new_run,
    started,
    step,
)
from tests.contract.conftest import StoreFactory

FAILED = RunOutcome(RunStatus.FAILED, error=ErrorInfo("StepFailed", "the model is down"))


def redriven(seconds: float = 10) -> HistoryEvent:
    return HistoryEvent(
        seq=0,
        type=HistoryEventType.EXECUTION_REDRIVEN,
        timestamp=at(seconds),
        op_id="2",
        details={"dropped": ["2"]},
    )


async def failed_run(store: RunStore, run_id: str = "r-1") -> RunRecord:
    """A run that recorded step 1, failed at step 2, and holds a failed callback."""
    await create(store, run_id)
    run = await claim_one(store, run_id)
    failing = [step("1"), step("2", status=OpStatus.FAILED)]
    await store.commit(checkpoint(run, ops=failing, callbacks=[callback(f"cb-{run_id}", run_id)]))
    denied = CallbackResolution(f"cb-{run_id}", CallbackStatus.FAILED, error=ErrorInfo("No", "no"))
    await store.commit(checkpoint(run, resolutions=[denied]))
    await store.commit(checkpoint(run, now=2, outcome=FAILED))
    ended = await store.get_run(run_id)
    assert ended.status == RunStatus.FAILED
    return ended


async def test_redrive_drops_resets_reopens_and_makes_the_run_pending(store: RunStore) -> None:
    run = await failed_run(store)
    assert (await store.get_callback("cb-r-1")).status == CallbackStatus.FAILED
    reset = step("1").evolve(status=OpStatus.PENDING, result=None, ended_at=None)
    [back] = await store.redrive_runs(
        [
            Redrive(
                "r-1",
                run.lease_epoch,
                redriven(),
                drop=["2"],
                reset=[reset],
                reopen=["cb-r-1"],
                version="2",
                module="tests.contract:wf2",
            )
        ],
        now=at(10),
    )
    assert back.status == RunStatus.PENDING
    assert (back.result, back.error, back.wake_at, back.lease_owner) == (None, None, None, None)
    assert back.lease_epoch == run.lease_epoch + 1 and not back.cancel_requested
    assert (back.version, back.module, back.updated_at) == ("2", "tests.contract:wf2", at(10))
    assert back == await store.get_run("r-1")
    journal = {op.op_id: op for op in await store.load_journal("r-1")}
    assert set(journal) == {"1"} and journal["1"].status == OpStatus.PENDING
    assert (await store.get_callback("cb-r-1")).status == CallbackStatus.PENDING
    history = await store.history("r-1")
    assert history[-1].type == HistoryEventType.EXECUTION_REDRIVEN
    assert history[-1].details == {"dropped": ["2"]} and history[-1].op_id == "2"
    # PENDING again: a worker can claim it, under a newer epoch than any old lease.
    claimed = await claim_one(store, "r-1", now=11)
    assert claimed.lease_epoch == back.lease_epoch + 1


async def test_a_redrive_keeps_the_version_when_none_is_given(store: RunStore) -> None:
    run = await failed_run(store)
    [back] = await store.redrive_runs([Redrive("r-1", run.lease_epoch, redriven())], now=at(10))
    assert (back.version, back.module) == (run.version, run.module)
    assert {op.op_id for op in await store.load_journal("r-1")} == {"1", "2"}


async def test_a_redrive_clears_a_cancellation(store: RunStore) -> None:
    await create(store, "r-1")
    cancelled = await cancel_tree(store, "r-1", 1)
    assert cancelled.status == RunStatus.CANCELLED and cancelled.cancel_requested
    [back] = await store.redrive_runs(
        [Redrive("r-1", cancelled.lease_epoch, redriven())], now=at(10)
    )
    assert back.status == RunStatus.PENDING and not back.cancel_requested


async def test_a_redrive_is_refused_unless_the_run_ended_at_the_planned_epoch(
    store: RunStore,
) -> None:
    await create(store, "r-live")
    live = await claim_one(store, "r-live")
    with pytest.raises(RunStateError, match="r-live"):
        await store.redrive_runs([Redrive("r-live", live.lease_epoch, redriven())], now=at(10))
    run = await failed_run(store)
    with pytest.raises(RunStateError):  # planned against an older state of the run
        await store.redrive_runs([Redrive("r-1", run.lease_epoch - 1, redriven())], now=at(10))
    await store.redrive_runs([Redrive("r-1", run.lease_epoch, redriven())], now=at(10))
    with pytest.raises(RunStateError):  # a second retry of the same failure
        await store.redrive_runs([Redrive("r-1", run.lease_epoch, redriven())], now=at(11))
    with pytest.raises(RunNotFound):
        await store.redrive_runs([Redrive("r-none", 0, redriven())], now=at(10))


async def test_redrives_apply_together_or_not_at_all(store: RunStore) -> None:
    parent = await failed_run(store, "r-parent")
    child = await failed_run(store, "r-child")
    with pytest.raises(RunStateError):
        await store.redrive_runs(
            [
                Redrive("r-parent", parent.lease_epoch, redriven(), drop=["2"]),
                Redrive("r-child", child.lease_epoch + 5, redriven(), drop=["2"]),
            ],
            now=at(10),
        )
    assert (await store.get_run("r-parent")).status == RunStatus.FAILED
    assert {op.op_id for op in await store.load_journal("r-parent")} == {"1", "2"}
    runs = await store.redrive_runs(
        [
            Redrive("r-parent", parent.lease_epoch, redriven(), drop=["2"]),
            Redrive("r-child", child.lease_epoch, redriven(), drop=["2"]),
        ],
        now=at(10),
    )
    assert [(r.run_id, r.status) for r in runs] == [
        ("r-parent", RunStatus.PENDING),
        ("r-child", RunStatus.PENDING),
    ]


async def test_fork_run_creates_the_run_with_its_journal_and_origin(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    await store.open()
    try:
        origin = RunOrigin("r-source", "3.1", state={"goal": "dig"})
        run = new_run("r-fork", origin=origin)
        forked = HistoryEvent(
            seq=0,
            type=HistoryEventType.EXECUTION_FORKED,
            timestamp=at(0),
            op_id="3.1",
            details={"run_id": "r-source", "op_id": "3.1"},
        )
        await store.fork_run(run, [started(), forked], [step("1"), step("2")])
    finally:
        await store.close()
    other = store_factory()  # another process reads what was written
    await other.open()
    try:
        stored = await other.get_run("r-fork")
        assert stored.origin == origin and stored.status == RunStatus.PENDING
        assert [op.op_id for op in sorted(await other.load_journal("r-fork"), key=_id)] == [
            "1",
            "2",
        ]
        assert [e.type for e in await other.history("r-fork")] == [
            HistoryEventType.EXECUTION_STARTED,
            HistoryEventType.EXECUTION_FORKED,
        ]
        assert [r.run_id for r in await other.list_runs()] == ["r-fork"]
        assert (await other.get_run("r-fork")).origin == origin
    finally:
        await other.close()


async def test_runs_without_origin_and_callbacks_keep_their_payload_schema(
    store: RunStore,
) -> None:
    run = await create(store, "r-1")
    assert (await store.get_run("r-1")).origin is None
    claimed = await claim_one(store, run.run_id)
    schema = {
        "type": "object",
        "properties": {"approved": {"type": "boolean"}},
        "required": ["approved"],
    }
    await store.commit(
        checkpoint(
            claimed,
            callbacks=[callback("cb-typed", "r-1", payload_schema=schema), callback("cb", "r-1")],
        )
    )
    assert (await store.get_callback("cb-typed")).payload_schema == schema
    assert (await store.get_callback("cb")).payload_schema is None
    by_id = {cb.callback_id: cb for cb in await store.load_callbacks("r-1")}
    assert by_id["cb-typed"].payload_schema == schema


def _id(op: OpRecord) -> str:
    return op.op_id


def test_a_sqlite_file_of_the_previous_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, statements in enumerate(MIGRATIONS[:2], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    conn.execute(
        "INSERT INTO runs (run_id, workflow, version, status, input, created_at, updated_at)"
        " VALUES ('r-old', 'wf', '1', 'FAILED', 'null', 0, 0)"
    )
    conn.commit()
    conn.close()

    async def upgraded() -> RunRecord:
        store = SqliteRunStore(path)
        await store.open()
        try:
            return await store.get_run("r-old")
        finally:
            await store.close()

    old = asyncio.run(upgraded())
    assert old.status == RunStatus.FAILED and old.origin is None
