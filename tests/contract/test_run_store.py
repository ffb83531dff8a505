"""The run store contract, run against every adapter (SQLite and PostgreSQL).

Each test drives the port directly, as the engine would, and checks what the docstrings of
``cadenza.ports.run_store`` promise: which runs a claim may take, what a checkpoint writes
(all of it or nothing), when it is refused (fencing, conditional resolutions), how wake-ups,
children, callbacks, cancellation, the outbox, rules and queue limits behave.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadenza.errors import (
    CallbackNotFound,
    CheckpointConflict,
    ErrorInfo,
    LeaseLost,
    RunNotFound,
    RunStateError,
    StoreError,
)
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Checkpoint,
    QueueConfig,
    Rule,
    RunOutcome,
    RunRecord,
    RunStatus,
    RunStore,
)
from tests.contract.conftest import StoreFactory

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_run(run_id: str, *, created: float = 0, **changes: Any) -> RunRecord:
    run = RunRecord(
        run_id=run_id,
        workflow="wf",
        version="1",
        status=RunStatus.PENDING,
        input='{"n": 1}',
        created_at=at(created),
        updated_at=at(created),
        module="tests.contract:wf",
        state={"agentId": run_id, "status": "INITIATED"},
        trace_id=f"trace-{run_id}",
    )
    return run.evolve(**changes)


def started(seconds: float = 0) -> HistoryEvent:
    return HistoryEvent(seq=0, type=HistoryEventType.EXECUTION_STARTED, timestamp=at(seconds))


async def create(store: RunStore, run_id: str, **changes: Any) -> RunRecord:
    return await store.create_run(new_run(run_id, **changes), started())


async def claim(
    store: RunStore,
    *,
    owner: str = "w1",
    now: float = 0,
    lease: float = 30,
    limit: int = 100,
    **filters: Any,
) -> list[RunRecord]:
    return await store.claim_runs(
        owner=owner, now=at(now), lease_until=at(now + lease), limit=limit, **filters
    )


async def claim_one(
    store: RunStore, run_id: str, *, owner: str = "w1", now: float = 0, lease: float = 30
) -> RunRecord:
    claimed = await claim(store, owner=owner, now=now, lease=lease, run_id=run_id)
    assert [r.run_id for r in claimed] == [run_id]
    return claimed[0]


def checkpoint(run: RunRecord, now: float = 1, **parts: Any) -> Checkpoint:
    assert run.lease_owner is not None
    return Checkpoint(run.run_id, run.lease_owner, run.lease_epoch, at(now), **parts)


def step(op_id: str, *, status: OpStatus = OpStatus.SUCCEEDED, result: str = '"ok"') -> OpRecord:
    return OpRecord(
        op_id,
        OpType.STEP,
        f"step-{op_id}",
        status,
        attempt=1,
        result=result if status == OpStatus.SUCCEEDED else None,
        started_at=at(1),
        ended_at=at(2) if status.terminal else None,
        data={"k": [1, 2]},
    )


def note(type: HistoryEventType, op_id: str | None = None, **details: Any) -> HistoryEvent:
    return HistoryEvent(seq=0, type=type, timestamp=at(1), op_id=op_id, details=details)


def callback(
    callback_id: str,
    run_id: str,
    *,
    kind: CallbackKind = CallbackKind.CALLBACK,
    created: float = 0,
    **changes: Any,
) -> CallbackRecord:
    record = CallbackRecord(
        callback_id=callback_id,
        run_id=run_id,
        op_id="1",
        kind=kind,
        status=CallbackStatus.PENDING,
        created_at=at(created),
        expires_at=at(3600),
    )
    return CallbackRecord(**{**_fields(record), **changes})


def _fields(record: CallbackRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


def envelope(event_id: str, **detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "order.placed",
        "source": "tests",
        "time": "2026-01-01T00:00:00Z",
        "resources": [],
        "detail": detail,
    }


async def suspended(
    store: RunStore, run_id: str, *, wake_at: float | None = None, **changes: Any
) -> RunRecord:
    """A run that ran once and now waits (for ``wake_at``, or for a wake-up)."""
    await create(store, run_id, **changes)
    run = await claim_one(store, run_id)
    await store.commit(
        checkpoint(run, suspend=True, wake_at=at(wake_at) if wake_at is not None else None)
    )
    return await store.get_run(run_id)


# --- runs ----------------------------------------------------------------------------------


async def test_a_created_run_reads_back_as_written(store: RunStore) -> None:
    run = new_run(
        "r-1",
        queue="billing",
        priority=3,
        idempotency_key="order-7",
        state={"agentId": "r-1", "plan": [{"step": "é ✓", "n": 1.5}], "nested": {"a": None}},
    )
    assert await store.create_run(run, started()) == run
    assert await store.get_run("r-1") == run
    [event] = await store.history("r-1")
    assert event.type == HistoryEventType.EXECUTION_STARTED
    assert event.timestamp == at(0)


async def test_an_unknown_run_is_not_found(store: RunStore) -> None:
    with pytest.raises(RunNotFound):
        await store.get_run("r-missing")


async def test_an_idempotency_key_returns_the_run_it_started(store: RunStore) -> None:
    first = await create(store, "r-1", idempotency_key="key-1")
    again = await create(store, "r-2", idempotency_key="key-1", input='{"n": 2}')
    assert again == first
    assert [r.run_id for r in await store.list_runs()] == ["r-1"]
    assert len(await store.history("r-1")) == 1
    with pytest.raises(RunNotFound):
        await store.get_run("r-2")


async def test_creating_a_run_id_twice_is_a_store_error(store: RunStore) -> None:
    await create(store, "r-1")
    with pytest.raises(StoreError):
        await create(store, "r-1")
    assert len(await store.history("r-1")) == 1


async def test_list_runs_newest_first_with_filters(store: RunStore) -> None:
    await create(store, "r-a", created=1)
    await create(store, "r-b", created=2, workflow="other")
    await create(store, "r-c", created=3, parent_run_id="r-a", parent_op_id="1")
    await suspended(store, "r-d", wake_at=100)
    assert [r.run_id for r in await store.list_runs()] == ["r-c", "r-b", "r-a", "r-d"]
    assert [r.run_id for r in await store.list_runs(limit=2)] == ["r-c", "r-b"]
    assert [r.run_id for r in await store.list_runs(workflow="other")] == ["r-b"]
    assert [r.run_id for r in await store.list_runs(parent_run_id="r-a")] == ["r-c"]
    assert [r.run_id for r in await store.list_runs(status=RunStatus.SUSPENDED)] == ["r-d"]


# --- claims --------------------------------------------------------------------------------


async def test_claims_take_only_runnable_runs(store: RunStore) -> None:
    await create(store, "r-pending")
    await suspended(store, "r-due", wake_at=5)
    await suspended(store, "r-later", wake_at=500)
    await suspended(store, "r-waiting")  # no wake time: only a wake-up can resume it
    await create(store, "r-held")
    await claim_one(store, "r-held", now=0, lease=100)
    await create(store, "r-orphaned")
    await claim_one(store, "r-orphaned", now=0, lease=5)  # its worker died: lease runs out
    await create(store, "r-done")
    done = await claim_one(store, "r-done")
    await store.commit(checkpoint(done, outcome=RunOutcome(RunStatus.SUCCEEDED, result="1")))

    claimed = await claim(store, owner="w2", now=10)
    assert sorted(r.run_id for r in claimed) == ["r-due", "r-orphaned", "r-pending"]
    for run in claimed:
        assert run.status == RunStatus.RUNNING
        assert run.lease_owner == "w2"
        assert run.lease_expires_at == at(40)
    assert await claim(store, owner="w3", now=10) == []


async def test_each_claim_moves_the_fencing_epoch_on(store: RunStore) -> None:
    await create(store, "r-1")
    first = await claim_one(store, "r-1", owner="w1", now=0, lease=5)
    assert first.lease_epoch == 1
    second = await claim_one(store, "r-1", owner="w2", now=6, lease=5)
    assert second.lease_epoch == 2
    assert (await store.get_run("r-1")).lease_owner == "w2"


async def test_claims_filter_by_workflow_queue_and_run(store: RunStore) -> None:
    await create(store, "r-a", workflow="a", version="1")
    await create(store, "r-a2", workflow="a", version="2")
    await create(store, "r-b", workflow="b", queue="slow")
    await create(store, "r-c", workflow="c", queue="slow")
    assert await claim(store, workflows=[]) == []
    assert [r.run_id for r in await claim(store, workflows=[("a", "2")])] == ["r-a2"]
    assert [r.run_id for r in await claim(store, queues=["slow"], run_id="r-c")] == ["r-c"]
    assert [r.run_id for r in await claim(store, queues=["slow"])] == ["r-b"]
    assert [r.run_id for r in await claim(store)] == ["r-a"]


async def test_claims_take_higher_priority_then_older_runs_first(store: RunStore) -> None:
    await create(store, "r-old", created=1)
    await create(store, "r-new", created=2)
    await create(store, "r-urgent", created=3, priority=5)
    await create(store, "r-newest", created=4)
    assert [r.run_id for r in await claim(store, limit=2)] == ["r-urgent", "r-old"]
    assert [r.run_id for r in await claim(store, limit=5)] == ["r-new", "r-newest"]


async def test_concurrent_claimers_never_take_the_same_run(
    store: RunStore, store_factory: StoreFactory
) -> None:
    for i in range(120):
        await create(store, f"r-{i:03}")
    other = store_factory()  # a second process, as far as the backend can tell
    await other.open()
    try:

        async def drain(s: RunStore, owner: str) -> list[str]:
            taken: list[str] = []
            while batch := await claim(s, owner=owner, limit=7):
                taken += [r.run_id for r in batch]
                await asyncio.sleep(0)
            return taken

        first, second, third = await asyncio.gather(
            drain(store, "w1"), drain(other, "w2"), drain(store, "w3")
        )
    finally:
        await other.close()
    assert not set(first) & set(second) and not set(second) & set(third)
    assert not set(first) & set(third)
    assert sorted(first + second + third) == [f"r-{i:03}" for i in range(120)]


async def test_a_lease_is_renewed_only_by_its_holder(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1", owner="w1", lease=10)
    assert await store.renew_lease("r-1", owner="w1", epoch=1, lease_until=at(50))
    assert (await store.get_run("r-1")).lease_expires_at == at(50)
    assert not await store.renew_lease("r-1", owner="w2", epoch=1, lease_until=at(90))
    assert not await store.renew_lease(
        "r-1", owner="w1", epoch=run.lease_epoch + 1, lease_until=at(90)
    )
    assert (await store.get_run("r-1")).lease_expires_at == at(50)


async def test_a_released_run_is_pending_for_any_worker(store: RunStore) -> None:
    await create(store, "r-1")
    await claim_one(store, "r-1", owner="w1", lease=100)
    await store.release_lease("r-1", owner="w2", epoch=1)  # not the holder: no effect
    assert (await store.get_run("r-1")).status == RunStatus.RUNNING
    await store.release_lease("r-1", owner="w1", epoch=1)
    released = await store.get_run("r-1")
    assert released.status == RunStatus.PENDING
    assert released.lease_owner is None
    again = await claim_one(store, "r-1", owner="w2", now=1)
    assert again.lease_epoch == 2


async def test_next_wake_at_is_the_earliest_time_a_run_becomes_runnable(
    store: RunStore,
) -> None:
    assert await store.next_wake_at() is None
    await suspended(store, "r-late", wake_at=300, queue="q1")
    await suspended(store, "r-soon", wake_at=200, workflow="other")
    assert await store.next_wake_at() == at(200)
    assert await store.next_wake_at(queues=["q1"]) == at(300)
    assert await store.next_wake_at(workflows=[("wf", "1")]) == at(300)
    assert await store.next_wake_at(queues=["nothing-here"]) is None
    await create(store, "r-now", queue="q2")
    due = await store.next_wake_at()
    assert due is not None and due <= at(0)
    assert await store.next_wake_at(queues=["q1"]) == at(300)


# --- checkpoints ---------------------------------------------------------------------------


async def test_a_checkpoint_writes_all_its_parts(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    cb = callback("cb-1", "r-1", kind=CallbackKind.EVENT, pattern={"source": ["x"]})
    child = new_run("r-child", parent_run_id="r-1", parent_op_id="3", created=1)
    result = await store.commit(
        checkpoint(
            run,
            ops=[step("1"), step("2", status=OpStatus.STARTED)],
            history=[
                note(HistoryEventType.STEP_STARTED, "1", attempt=1),
                note(HistoryEventType.STEP_SUCCEEDED, "1", when=at(1)),
            ],
            state={"agentId": "r-1", "status": "PLANNING"},
            callbacks=[cb],
            events=[envelope("e-1", n=1)],
            children=[child],
        )
    )
    assert not result.cancel_requested
    journal = {op.op_id: op for op in await store.load_journal("r-1")}
    assert journal == {"1": step("1"), "2": step("2", status=OpStatus.STARTED)}
    assert await store.load_callbacks("r-1") == [cb]
    ops, callbacks = await store.load_activation("r-1")
    assert ({op.op_id: op for op in ops}, callbacks) == (journal, [cb])
    history = await store.history("r-1")
    assert [e.type for e in history] == [
        HistoryEventType.EXECUTION_STARTED,
        HistoryEventType.STEP_STARTED,
        HistoryEventType.STEP_SUCCEEDED,
    ]
    assert history[1].details == {"attempt": 1}
    assert history[2].details == {"when": str(at(1))}  # not JSON: kept as text
    current = await store.get_run("r-1")
    assert current.state == {"agentId": "r-1", "status": "PLANNING"}
    assert current.status == RunStatus.RUNNING
    assert current.updated_at == at(1)
    assert (await store.get_run("r-child")).parent_run_id == "r-1"
    [child_started] = await store.history("r-child")
    assert child_started.details == {"parent_run_id": "r-1", "parent_op_id": "3"}
    [entry] = await store.fetch_outbox(limit=10)
    assert entry.event == envelope("e-1", n=1)


async def test_a_later_checkpoint_updates_journal_records(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, ops=[step("1", status=OpStatus.STARTED)]))
    failed = step("1", status=OpStatus.FAILED).evolve(
        error=ErrorInfo("ValueError", "bad", details={"x": 1}), attempt=2
    )
    await store.commit(checkpoint(run, now=2, ops=[failed]))
    assert await store.load_journal("r-1") == [failed]


async def test_a_checkpoint_with_a_failing_part_leaves_nothing_behind(store: RunStore) -> None:
    await create(store, "r-1")
    await create(store, "r-taken")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, callbacks=[callback("cb-1", "r-1")]))
    before = await store.get_run("r-1")
    for broken in (
        {"callbacks": [callback("cb-2", "r-1"), callback("cb-1", "r-1")]},  # cb-1 exists
        {"children": [new_run("r-new"), new_run("r-taken")]},  # r-taken exists
    ):
        with pytest.raises(StoreError):
            await store.commit(
                checkpoint(
                    run,
                    now=5,
                    ops=[step("9")],
                    history=[note(HistoryEventType.STEP_SUCCEEDED, "9")],
                    state={"changed": True},
                    events=[envelope("e-9")],
                    suspend=True,
                    wake_at=at(60),
                    **broken,
                )
            )
        assert await store.load_journal("r-1") == []
        assert [c.callback_id for c in await store.load_callbacks("r-1")] == ["cb-1"]
        assert len(await store.history("r-1")) == 1
        assert await store.fetch_outbox(limit=10) == []
        assert await store.get_run("r-1") == before
        with pytest.raises(RunNotFound):
            await store.get_run("r-new")


async def test_a_checkpoint_from_a_stale_lease_is_refused_and_writes_nothing(
    store: RunStore,
) -> None:
    await create(store, "r-1")
    stale = await claim_one(store, "r-1", owner="w1", now=0, lease=5)
    fresh = await claim_one(store, "r-1", owner="w2", now=6, lease=30)
    with pytest.raises(LeaseLost):
        await store.commit(
            checkpoint(
                stale,
                now=7,
                ops=[step("1")],
                history=[note(HistoryEventType.STEP_SUCCEEDED, "1")],
                state={"from": "w1"},
                callbacks=[callback("cb-stale", "r-1")],
                events=[envelope("e-stale")],
                children=[new_run("r-stale-child")],
                outcome=RunOutcome(RunStatus.SUCCEEDED, result='"w1"'),
            )
        )
    assert await store.load_journal("r-1") == []
    assert await store.load_callbacks("r-1") == []
    assert await store.fetch_outbox(limit=10) == []
    assert len(await store.history("r-1")) == 1
    current = await store.get_run("r-1")
    assert (current.status, current.lease_owner, current.result) == (RunStatus.RUNNING, "w2", None)
    await store.commit(checkpoint(fresh, now=8, ops=[step("1")]))
    assert [op.op_id for op in await store.load_journal("r-1")] == ["1"]


async def test_a_checkpoint_after_the_run_ended_is_refused(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, outcome=RunOutcome(RunStatus.SUCCEEDED, result="1")))
    with pytest.raises(LeaseLost):
        await store.commit(checkpoint(run, now=2, ops=[step("1")]))
    with pytest.raises(RunNotFound):
        await store.commit(Checkpoint("r-missing", "w1", 1, at(1), ops=[step("1")]))


async def test_resolutions_apply_only_to_pending_callbacks(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(
        checkpoint(run, callbacks=[callback("cb-1", "r-1"), callback("cb-2", "r-1")])
    )
    timeout = ErrorInfo("CallbackTimedOut", "no answer")
    await store.commit(
        checkpoint(
            run,
            now=2,
            resolutions=[CallbackResolution("cb-1", CallbackStatus.TIMED_OUT, error=timeout)],
        )
    )
    resolved = await store.get_callback("cb-1")
    assert (resolved.status, resolved.error, resolved.completed_at) == (
        CallbackStatus.TIMED_OUT,
        timeout,
        at(2),
    )
    # cb-2 is completed from outside while the run still holds it open...
    assert await store.complete_callback(
        CallbackResolution("cb-2", CallbackStatus.SUCCEEDED, result='"yes"'), now=at(3)
    )
    # ...so a checkpoint that would time it out conflicts, and writes nothing at all.
    with pytest.raises(CheckpointConflict):
        await store.commit(
            checkpoint(
                run,
                now=4,
                ops=[step("5")],
                resolutions=[CallbackResolution("cb-2", CallbackStatus.TIMED_OUT)],
                suspend=True,
            )
        )
    assert await store.load_journal("r-1") == []
    assert (await store.get_callback("cb-2")).result == '"yes"'
    assert (await store.get_run("r-1")).status == RunStatus.RUNNING


async def test_a_run_woken_while_running_suspends_as_pending(store: RunStore) -> None:
    """The race rule: a wake-up that arrives between claim and suspend is not lost."""
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, callbacks=[callback("cb-1", "r-1")]))
    # The activation read cb-1 as PENDING and is about to suspend on it; meanwhile:
    assert await store.complete_callback(
        CallbackResolution("cb-1", CallbackStatus.SUCCEEDED, result="1"), now=at(2)
    )
    assert (await store.get_run("r-1")).status == RunStatus.RUNNING
    await store.commit(checkpoint(run, now=3, suspend=True, wake_at=at(500)))
    woken = await store.get_run("r-1")
    assert (woken.status, woken.lease_owner) == (RunStatus.PENDING, None)
    # The next claim consumes the wake-up: suspending again really suspends.
    again = await claim_one(store, "r-1", now=4)
    await store.commit(checkpoint(again, now=5, suspend=True, wake_at=at(500)))
    parked = await store.get_run("r-1")
    assert (parked.status, parked.wake_at) == (RunStatus.SUSPENDED, at(500))


async def test_a_child_outcome_resolves_the_parent_callback_and_wakes_the_parent(
    store: RunStore,
) -> None:
    await create(store, "r-parent")
    parent = await claim_one(store, "r-parent")
    children = [
        new_run(f"r-kid-{i}", parent_run_id="r-parent", parent_op_id=str(i)) for i in (1, 2)
    ]
    await store.commit(
        checkpoint(
            parent,
            children=children,
            callbacks=[callback(c.run_id, "r-parent", kind=CallbackKind.INVOKE) for c in children],
            suspend=True,
        )
    )
    assert (await store.get_run("r-parent")).status == RunStatus.SUSPENDED
    kid = await claim_one(store, "r-kid-1", owner="w2", now=2)
    await store.commit(
        checkpoint(kid, now=3, outcome=RunOutcome(RunStatus.SUCCEEDED, result='{"v": 1}'))
    )
    ended = await store.get_run("r-kid-1")
    assert (ended.status, ended.result, ended.lease_owner) == (
        RunStatus.SUCCEEDED,
        '{"v": 1}',
        None,
    )
    resolved = await store.get_callback("r-kid-1")
    assert (resolved.status, resolved.result) == (CallbackStatus.SUCCEEDED, '{"v": 1}')
    assert (await store.get_run("r-parent")).status == RunStatus.PENDING

    kid = await claim_one(store, "r-kid-2", owner="w2", now=4)
    boom = ErrorInfo("ValueError", "boom")
    await store.commit(checkpoint(kid, now=5, outcome=RunOutcome(RunStatus.FAILED, error=boom)))
    failed = await store.get_callback("r-kid-2")
    assert (failed.status, failed.error) == (CallbackStatus.FAILED, boom)
    assert (await store.get_run("r-kid-2")).error == boom


async def test_a_child_may_still_end_after_its_parent_was_cancelled(store: RunStore) -> None:
    await create(store, "r-parent")
    parent = await claim_one(store, "r-parent")
    kid_run = new_run("r-kid", parent_run_id="r-parent", parent_op_id="1")
    await store.commit(
        checkpoint(
            parent,
            children=[kid_run],
            callbacks=[callback("r-kid", "r-parent", kind=CallbackKind.INVOKE)],
            suspend=True,
        )
    )
    kid = await claim_one(store, "r-kid", owner="w2", now=2, lease=100)
    cancelled = await store.request_cancel("r-parent", now=at(3))
    assert cancelled.status == RunStatus.CANCELLED
    assert (await store.get_run("r-kid")).cancel_requested  # held: it stops itself
    result = await store.commit(checkpoint(kid, now=4, ops=[step("1")]))
    assert result.cancel_requested
    error = ErrorInfo("RunCancelled", "run r-kid was cancelled")
    await store.commit(checkpoint(kid, now=5, outcome=RunOutcome(RunStatus.CANCELLED, error=error)))
    assert (await store.get_run("r-kid")).status == RunStatus.CANCELLED
    assert (await store.get_run("r-parent")).status == RunStatus.CANCELLED


# --- callbacks -----------------------------------------------------------------------------


async def test_a_callback_completes_once_and_wakes_its_run(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(
        checkpoint(run, callbacks=[callback("cb-1", "r-1")], suspend=True, wake_at=at(3600))
    )
    assert (await store.get_run("r-1")).status == RunStatus.SUSPENDED
    yes = CallbackResolution("cb-1", CallbackStatus.SUCCEEDED, result='"approved"')
    assert await store.complete_callback(yes, now=at(5))
    assert (await store.get_run("r-1")).status == RunStatus.PENDING
    no = CallbackResolution("cb-1", CallbackStatus.FAILED, error=ErrorInfo("Denied", "no"))
    assert not await store.complete_callback(no, now=at(6))
    done = await store.get_callback("cb-1")
    assert (done.status, done.result, done.error, done.completed_at) == (
        CallbackStatus.SUCCEEDED,
        '"approved"',
        None,
        at(5),
    )
    with pytest.raises(CallbackNotFound):
        await store.complete_callback(CallbackResolution("cb-x", CallbackStatus.FAILED), now=at(7))
    with pytest.raises(CallbackNotFound):
        await store.get_callback("cb-x")


async def test_callbacks_of_an_ended_run_are_closed(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(
        checkpoint(
            run,
            callbacks=[callback("cb-1", "r-1")],
            outcome=RunOutcome(RunStatus.FAILED, error=ErrorInfo("X", "x")),
        )
    )
    with pytest.raises(RunStateError):
        await store.complete_callback(
            CallbackResolution("cb-1", CallbackStatus.SUCCEEDED), now=at(2)
        )
    assert (await store.get_callback("cb-1")).status == CallbackStatus.PENDING


async def test_heartbeats_reach_only_pending_callbacks(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    cb = callback("cb-1", "r-1", heartbeat_timeout_s=30.0)
    await store.commit(checkpoint(run, callbacks=[cb]))
    assert await store.heartbeat_callback("cb-1", now=at(20))
    beaten = await store.get_callback("cb-1")
    assert beaten.heartbeat_at == at(20)
    assert beaten.deadline() == at(50)
    await store.complete_callback(CallbackResolution("cb-1", CallbackStatus.SUCCEEDED), now=at(21))
    assert not await store.heartbeat_callback("cb-1", now=at(22))
    assert not await store.heartbeat_callback("cb-missing", now=at(22))


async def test_open_event_waiters_are_pending_event_callbacks_oldest_first(
    store: RunStore,
) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    pattern = {"detail-type": ["order.placed"], "detail": {"total": [{"numeric": [">", 10]}]}}
    await store.commit(
        checkpoint(
            run,
            callbacks=[
                callback("ev-2", "r-1", kind=CallbackKind.EVENT, created=2, pattern=pattern),
                callback("ev-1", "r-1", kind=CallbackKind.EVENT, created=1, pattern=pattern),
                callback("ev-done", "r-1", kind=CallbackKind.EVENT, created=0, pattern=pattern),
                callback("cb-plain", "r-1", created=0),
            ],
        )
    )
    await store.complete_callback(
        CallbackResolution("ev-done", CallbackStatus.SUCCEEDED), now=at(3)
    )
    waiters = await store.open_event_waiters()
    assert [w.callback_id for w in waiters] == ["ev-1", "ev-2"]
    assert waiters[0].pattern == pattern


# --- cancellation --------------------------------------------------------------------------


async def test_cancelling_a_tree_ends_idle_runs_and_flags_held_ones(store: RunStore) -> None:
    await create(store, "r-root")
    root = await claim_one(store, "r-root")
    kids = [
        new_run("r-idle", parent_run_id="r-root", parent_op_id="1"),
        new_run("r-busy", parent_run_id="r-root", parent_op_id="2"),
    ]
    await store.commit(
        checkpoint(
            root,
            children=kids,
            callbacks=[callback(k.run_id, "r-root", kind=CallbackKind.INVOKE) for k in kids],
            suspend=True,
        )
    )
    idle = await claim_one(store, "r-idle")
    await store.commit(
        checkpoint(
            idle,
            children=[new_run("r-grandkid", parent_run_id="r-idle", parent_op_id="1")],
            callbacks=[callback("r-grandkid", "r-idle", kind=CallbackKind.INVOKE)],
            suspend=True,
        )
    )
    await claim_one(store, "r-busy", owner="w2", now=2, lease=100)

    cancelled = await store.request_cancel("r-root", now=at(5))
    assert (cancelled.status, cancelled.cancel_requested) == (RunStatus.CANCELLED, True)
    assert cancelled.error is not None and cancelled.error.type == "RunCancelled"
    for run_id in ("r-idle", "r-grandkid"):
        assert (await store.get_run(run_id)).status == RunStatus.CANCELLED
        assert (await store.history(run_id))[-1].type == HistoryEventType.EXECUTION_CANCELLED
    busy = await store.get_run("r-busy")
    assert (busy.status, busy.cancel_requested) == (RunStatus.RUNNING, True)
    assert (await store.history("r-root"))[-1].type == HistoryEventType.EXECUTION_CANCELLED

    with pytest.raises(RunStateError):
        await store.request_cancel("r-root", now=at(6))
    with pytest.raises(RunNotFound):
        await store.request_cancel("r-missing", now=at(6))


async def test_cancelling_a_child_fails_the_parent_callback_and_wakes_it(
    store: RunStore,
) -> None:
    await create(store, "r-parent")
    parent = await claim_one(store, "r-parent")
    await store.commit(
        checkpoint(
            parent,
            children=[new_run("r-kid", parent_run_id="r-parent", parent_op_id="1")],
            callbacks=[callback("r-kid", "r-parent", kind=CallbackKind.INVOKE)],
            suspend=True,
        )
    )
    await store.request_cancel("r-kid", now=at(2))
    resolved = await store.get_callback("r-kid")
    assert resolved.status == CallbackStatus.FAILED
    assert resolved.error is not None and resolved.error.type == "RunCancelled"
    assert (await store.get_run("r-parent")).status == RunStatus.PENDING


# --- events and rules ----------------------------------------------------------------------


async def test_the_outbox_delivers_in_order_and_dedupes_by_event_id(store: RunStore) -> None:
    await store.publish([envelope("e-1", n=1), envelope("e-2", n=2)], now=at(1))
    await store.publish([envelope("e-1", n=99)], now=at(2))  # the same event again
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, now=3, events=[envelope("e-2"), envelope("e-3", n=3)]))
    pending = await store.fetch_outbox(limit=10)
    assert [e.event["id"] for e in pending] == ["e-1", "e-2", "e-3"]
    assert pending[0].event == envelope("e-1", n=1)
    assert [e.published_at for e in pending] == [at(1), at(1), at(3)]
    assert [e.event["id"] for e in await store.fetch_outbox(limit=2)] == ["e-1", "e-2"]
    await store.mark_delivered([pending[0].seq, pending[1].seq], now=at(4))
    assert [e.event["id"] for e in await store.fetch_outbox(limit=10)] == ["e-3"]
    recent = await store.list_events(limit=10)
    assert [e.event["id"] for e in recent] == ["e-3", "e-2", "e-1"]
    assert [e.delivered_at for e in recent] == [None, at(4), at(4)]


async def test_rules_can_be_put_replaced_listed_and_deleted(store: RunStore) -> None:
    errors = Rule(
        "on-error",
        {"detail-type": ["AgentError"]},
        "start_workflow",
        {"workflow": "recover", "input": "event"},
        created_at=at(1),
    )
    orders = Rule(
        "orders",
        {"source": [{"prefix": "shop."}]},
        "complete_callback",
        {"token_path": "detail.token"},
        enabled=False,
        created_at=at(2),
    )
    await store.put_rule(orders)
    await store.put_rule(errors)
    assert await store.list_rules() == [errors, orders]
    changed = Rule(
        "orders", {"source": ["shop"]}, "start_workflow", {"workflow": "w"}, created_at=at(2)
    )
    await store.put_rule(changed)
    assert await store.list_rules() == [errors, changed]
    assert await store.delete_rule("orders")
    assert not await store.delete_rule("orders")
    assert await store.list_rules() == [errors]


async def test_history_is_in_order_and_pages_by_sequence(store: RunStore) -> None:
    await create(store, "r-1")
    await create(store, "r-2")
    run = await claim_one(store, "r-1")
    other = await claim_one(store, "r-2")
    for i in range(1, 4):
        await store.commit(
            checkpoint(
                run,
                now=i,
                history=[
                    note(HistoryEventType.STEP_STARTED, str(i)),
                    note(HistoryEventType.STEP_SUCCEEDED, str(i)),
                ],
            )
        )
        await store.commit(checkpoint(other, now=i, history=[note(HistoryEventType.WAIT_STARTED)]))
    history = await store.history("r-1")
    assert [(e.type, e.op_id) for e in history[1:]] == [
        (t, str(i))
        for i in range(1, 4)
        for t in (HistoryEventType.STEP_STARTED, HistoryEventType.STEP_SUCCEEDED)
    ]
    seqs = [e.seq for e in history]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert await store.history("r-1", after_seq=seqs[4]) == history[5:]


# --- queues --------------------------------------------------------------------------------


async def test_queue_configs_are_put_and_listed(store: RunStore) -> None:
    assert await store.list_queues() == []
    slow = QueueConfig("slow", concurrency=2)
    api = QueueConfig("api", rate_limit=10, rate_period=timedelta(minutes=1))
    await store.put_queue(slow)
    await store.put_queue(api)
    assert await store.list_queues() == [api, slow]
    await store.put_queue(QueueConfig("slow", concurrency=5))
    assert await store.list_queues() == [api, QueueConfig("slow", concurrency=5)]


async def test_a_queue_never_runs_more_than_its_concurrency(store: RunStore) -> None:
    await store.put_queue(QueueConfig("capped", concurrency=2))
    for i in range(5):
        await create(store, f"r-{i}", queue="capped", created=i)
    await create(store, "r-free", created=9)
    first = await claim(store, now=1)
    assert sorted(r.run_id for r in first) == ["r-0", "r-1", "r-free"]
    assert await claim(store, now=2) == []
    # One of them suspends: a slot is free.
    r0 = next(r for r in first if r.run_id == "r-0")
    await store.commit(checkpoint(r0, now=3, suspend=True, wake_at=at(1000)))
    assert [r.run_id for r in await claim(store, now=4)] == ["r-2"]
    # Leases that expired hold no slot (their worker is presumed dead): r-1 and r-2 are
    # runnable again and, being older, come before r-3; the cap still holds at 2.
    retaken = await claim(store, now=40)
    assert sorted(r.run_id for r in retaken) == ["r-1", "r-2", "r-free"]


async def test_a_queue_with_no_concurrency_is_paused(store: RunStore) -> None:
    await store.put_queue(QueueConfig("paused", concurrency=0))
    await create(store, "r-1", queue="paused")
    assert await claim(store) == []
    await store.put_queue(QueueConfig("paused"))
    assert [r.run_id for r in await claim(store)] == ["r-1"]


async def test_a_queue_rate_limit_is_a_token_bucket(store: RunStore) -> None:
    await store.put_queue(QueueConfig("api", rate_limit=3, rate_period=timedelta(seconds=60)))
    for i in range(10):
        await create(store, f"r-{i}", queue="api", created=i)
    assert len(await claim(store, now=0, lease=1)) == 3  # a full bucket: a burst of 3
    assert await claim(store, now=1, lease=1) == []
    assert len(await claim(store, now=20, lease=1)) == 1  # 20 s refill one token
    assert await claim(store, now=21, lease=1) == []
    assert len(await claim(store, now=200, lease=1)) == 3  # never more than the bucket holds


async def test_limited_and_unlimited_queues_share_one_priority_order(store: RunStore) -> None:
    await store.put_queue(QueueConfig("capped", concurrency=1))
    await create(store, "r-low", created=0)
    await create(store, "r-capped-high", queue="capped", priority=9, created=1)
    await create(store, "r-capped-2", queue="capped", priority=9, created=2)
    await create(store, "r-mid", priority=5, created=3)
    assert [r.run_id for r in await claim(store, limit=2)] == ["r-capped-high", "r-mid"]
    assert [r.run_id for r in await claim(store, limit=5)] == ["r-low"]


async def test_concurrent_claimers_respect_a_queue_cap_together(
    store: RunStore, store_factory: StoreFactory
) -> None:
    await store.put_queue(QueueConfig("capped", concurrency=3))
    for i in range(30):
        await create(store, f"r-{i:02}", queue="capped")
    others = [store_factory() for _ in range(2)]
    for other in others:
        await other.open()
    try:
        batches = await asyncio.gather(
            *(
                claim(s, owner=f"w{i}", limit=2)
                for i, s in enumerate([store, *others, store, *others])
            )
        )
    finally:
        for other in others:
            await other.close()
    taken = [r.run_id for batch in batches for r in batch]
    assert len(taken) <= 3 and len(set(taken)) == len(taken)
    # A claimer may skip a queue another is claiming from; later claims fill the cap.
    taken += [r.run_id for r in await claim(store, owner="w9", limit=10)]
    assert len(taken) == 3 and len(set(taken)) == 3
