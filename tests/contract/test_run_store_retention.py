"""The run-store contract for retention: ``ended_runs`` lists what may be pruned, oldest
first; ``prune_runs`` deletes a run whole (journal, history, callbacks, delivered events)
and only while the engine's decision still holds; ``compact_history`` folds old events
of an open run into one, fenced by its lease epoch."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.errors import ErrorInfo, RunNotFound
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpStatus
from cadenza.ports.run_store import (
    CallbackKind,
    HistoryCompaction,
    Redrive,
    RunOutcome,
    RunRecord,
    RunStatus,
    RunStore,
)
from tests.contract._support import (
    at,
    callback,
    checkpoint,
    child,
    claim_one,
    create,
    envelope,
    new_run,
    note,
    started,
    step,
    suspended,
)

DONE = RunOutcome(RunStatus.SUCCEEDED, result='"done"')
FAILED = RunOutcome(RunStatus.FAILED, error=ErrorInfo("StepFailed", "the model is down"))


async def ended(
    store: RunStore,
    run_id: str,
    *,
    at_s: float = 5,
    outcome: RunOutcome = DONE,
    delivered: bool = True,
    **changes: Any,
) -> RunRecord:
    """A run with two journal records, a callback and an emitted event, ended at ``at_s``."""
    await create(store, run_id, **changes)
    run = await claim_one(store, run_id, now=at_s - 1)
    await store.commit(
        checkpoint(
            run,
            now=at_s,
            ops=[step("1"), step("2")],
            history=[note(HistoryEventType.STEP_SUCCEEDED, "1")],
            callbacks=[callback(f"cb-{run_id}", run_id, kind=CallbackKind.CALLBACK)],
            events=[{**envelope(f"ev-{run_id}"), "run_id": run_id}],
            outcome=outcome,
        )
    )
    if delivered:
        entries = await store.fetch_outbox(limit=1000)
        await store.mark_delivered(
            [e.seq for e in entries if e.event.get("run_id") == run_id], now=at(at_s)
        )
    return await store.get_run(run_id)


async def test_prune_deletes_an_ended_run_whole(store: RunStore) -> None:
    await ended(store, "r-gone")
    await ended(store, "r-kept", at_s=6)
    await suspended(store, "r-open")

    pruned = await store.prune_runs(["r-gone", "r-open", "r-unknown"], ended_before=at(10))

    assert pruned.run_ids == ("r-gone",)
    assert (pruned.journal_records, pruned.callbacks, pruned.events) == (2, 1, 1)
    assert pruned.history_events == 2  # ExecutionStarted and the step's event
    with pytest.raises(RunNotFound):
        await store.get_run("r-gone")
    assert await store.load_journal("r-gone") == []
    assert await store.load_callbacks("r-gone") == []
    assert await store.history("r-gone") == []
    assert [e.event["id"] for e in await store.list_events(limit=10)] == ["ev-r-kept"]
    # Everything of the other runs is still there.
    assert len(await store.load_journal("r-kept")) == 2
    assert len(await store.history("r-kept")) == 2
    assert (await store.get_run("r-open")).status == RunStatus.SUSPENDED


async def test_undelivered_events_outlive_their_run(store: RunStore) -> None:
    await ended(store, "r-1", delivered=False)

    pruned = await store.prune_runs(["r-1"], ended_before=at(10))

    assert pruned.events == 0
    assert [e.event["id"] for e in await store.fetch_outbox(limit=10)] == ["ev-r-1"]


async def test_a_run_updated_since_the_decision_is_kept(store: RunStore) -> None:
    run = await ended(store, "r-1", at_s=5, outcome=FAILED)
    assert (await store.prune_runs(["r-1"], ended_before=at(5))).run_ids == ()  # strict

    # Retried after the engine decided, before the delete: open again.
    event = note(HistoryEventType.EXECUTION_REDRIVEN)
    await store.redrive_runs([Redrive("r-1", run.lease_epoch, event)], now=at(7))
    assert (await store.prune_runs(["r-1"], ended_before=at(6))).run_ids == ()

    # Ended again: updated after the decision, so still not the run the engine chose.
    again = await claim_one(store, "r-1", now=8)
    await store.commit(checkpoint(again, now=9, outcome=DONE))
    assert (await store.prune_runs(["r-1"], ended_before=at(6))).run_ids == ()
    assert (await store.get_run("r-1")).status == RunStatus.SUCCEEDED


async def test_an_open_parent_keeps_its_ended_child(store: RunStore) -> None:
    await create(store, "p")
    parent = await claim_one(store, "p")
    kid = new_run("c", parent_run_id="p", parent_op_id="1", status=RunStatus.PENDING)
    await store.commit(checkpoint(parent, children=[child(kid)], suspend=True, wake_at=at(4)))
    c = await claim_one(store, "c", now=2)
    await store.commit(checkpoint(c, now=3, outcome=DONE))

    assert (await store.prune_runs(["c"], ended_before=at(10))).run_ids == ()

    p = await claim_one(store, "p", now=4)
    await store.commit(checkpoint(p, now=5, outcome=DONE))
    pruned = await store.prune_runs(["c", "p"], ended_before=at(10))
    assert sorted(pruned.run_ids) == ["c", "p"]


async def test_a_pruned_runs_idempotency_key_is_free_again(store: RunStore) -> None:
    await ended(store, "r-1", idempotency_key="order-42")
    await store.prune_runs(["r-1"], ended_before=at(10))

    again = await store.create_run(new_run("r-2", idempotency_key="order-42"), started())

    assert again.run_id == "r-2"


async def test_ended_runs_oldest_update_first_with_a_cursor(store: RunStore) -> None:
    await ended(store, "r-b", at_s=7)
    await ended(store, "r-a", at_s=5)
    await ended(store, "r-c", at_s=9, outcome=FAILED)
    await ended(store, "r-other", at_s=6, workflow="other")
    await ended(store, "r-late", at_s=30)
    await suspended(store, "r-open")

    first = await store.ended_runs(updated_before=at(20), limit=2)
    assert [r.run_id for r in first] == ["r-a", "r-other"]
    rest = await store.ended_runs(
        updated_before=at(20), limit=10, after=(first[-1].updated_at, first[-1].run_id)
    )
    assert [r.run_id for r in rest] == ["r-b", "r-c"]
    assert rest[1].status == RunStatus.FAILED
    only = await store.ended_runs(updated_before=at(20), limit=10, workflow="wf")
    assert [r.run_id for r in only] == ["r-a", "r-b", "r-c"]


# --- no orphan rows: every table, counted -------------------------------------------------


def _sqlite_counts(path: Any) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


async def _postgres_counts(store: Any) -> dict[str, int]:
    rows = await store._all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        (store.schema,),
    )
    counts = {}
    for row in rows:
        name = row["table_name"]
        found = await store._one(f"SELECT count(*) AS n FROM {store.schema}.{name}")
        counts[name] = found["n"]
    return counts


async def _counts(store: RunStore) -> dict[str, int]:
    if isinstance(store, SqliteRunStore):
        return _sqlite_counts(store.path)
    return await _postgres_counts(store)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_pruning_leaves_no_orphan_rows(
    backend: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    if backend == "sqlite":
        store: RunStore = SqliteRunStore(tmp_path / "c.db", synchronous="NORMAL")
    else:
        import uuid

        from cadenza.adapters.postgres import PostgresRunStore

        url = request.getfixturevalue("postgres_url")
        store = PostgresRunStore.from_url(f"{url}?schema=t_{uuid.uuid4().hex[:12]}")
    await store.open()
    try:
        await ended(store, "r-kept", at_s=3)
        before = await _counts(store)

        # A parent that invoked a child, both ended, with journals, callbacks and events.
        await create(store, "p")
        parent = await claim_one(store, "p")
        kid = new_run("c", parent_run_id="p", parent_op_id="1", status=RunStatus.PENDING)
        await store.commit(
            checkpoint(
                parent,
                ops=[step("1", status=OpStatus.PENDING)],
                children=[child(kid)],
                callbacks=[callback("c", "p", kind=CallbackKind.INVOKE)],
                events=[{**envelope("ev-p"), "run_id": "p"}],
                suspend=True,
                wake_at=at(4),
            )
        )
        c = await claim_one(store, "c", now=2)
        await store.commit(checkpoint(c, now=3, ops=[step("1")], outcome=DONE))
        p = await claim_one(store, "p", now=4)
        await store.commit(checkpoint(p, now=5, ops=[step("1")], outcome=DONE))
        entries = await store.fetch_outbox(limit=10)
        await store.mark_delivered([e.seq for e in entries], now=at(6))
        assert await _counts(store) != before

        pruned = await store.prune_runs(["p", "c"], ended_before=at(10))

        assert sorted(pruned.run_ids) == ["c", "p"]
        assert await _counts(store) == before
    finally:
        await store.close()


# --- history compaction ---------------------------------------------------------------------


async def test_compacting_history_replaces_events_by_one_summary(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    noise = [note(HistoryEventType.INVOCATION_COMPLETED, epoch=n) for n in range(5)]
    await store.commit(checkpoint(run, history=noise, suspend=True, wake_at=at(2)))
    events = await store.history("r-1")
    drop = tuple(e.seq for e in events[1:5])  # the first four activations
    summary = HistoryEvent(
        seq=drop[0],
        type=HistoryEventType.HISTORY_COMPACTED,
        timestamp=at(1),
        details={"events": 4, "counts": {"InvocationCompleted": 4}},
    )

    stale = HistoryCompaction("r-1", run.lease_epoch + 1, drop, summary)
    assert not await store.compact_history(stale)
    assert await store.history("r-1") == events

    assert await store.compact_history(HistoryCompaction("r-1", run.lease_epoch, drop, summary))
    after = await store.history("r-1")
    assert [e.type for e in after] == [
        HistoryEventType.EXECUTION_STARTED,
        HistoryEventType.HISTORY_COMPACTED,
        HistoryEventType.INVOCATION_COMPLETED,
    ]
    assert after[1].seq == drop[0] and after[1].details["counts"] == {"InvocationCompleted": 4}
    assert after[2] == events[5]
    # Done already: the events are gone, so a second try writes nothing.
    assert not await store.compact_history(HistoryCompaction("r-1", run.lease_epoch, drop, summary))
    # New events still come after every kept one.
    await store.append_history("r-1", [note(HistoryEventType.ACTION_REQUESTED, by="ops")])
    last = (await store.history("r-1"))[-1]
    assert last.type == HistoryEventType.ACTION_REQUESTED and last.seq > events[-1].seq
