"""The run store contract, run against every adapter (SQLite, PostgreSQL, in memory).

Each test drives the port directly, as the engine would, and checks what the docstrings of
``cadenza.ports.run_store`` promise: which runs a claim may take, what a checkpoint writes
(all of it or nothing), when it is refused (fencing, conditional resolutions), how wake-ups,
children, callbacks, cancellation, the outbox, rules and queue limits behave.
"""

from __future__ import annotations

import asyncio

import pytest

from cadenza.errors import (
    CheckpointConflict,
    ErrorInfo,
    LeaseLost,
    RunAlreadyExists,
    RunNotFound,
    StoreError,
)
from cadenza.history import HistoryEventType
from cadenza.journal import OpStatus
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackResolution,
    CallbackStatus,
    Checkpoint,
    RunOutcome,
    RunStatus,
    RunStore,
)
from tests.contract._support import (
    at,
    callback,
    cancel_tree,
    checkpoint,
    child,
    claim,
    claim_one,
    create,
    envelope,
    new_run,
    note,
    started,
    step,
    suspended,
    wake_parent,
)
from tests.contract.conftest import StoreFactory

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


async def test_creating_a_run_id_twice_is_refused_naming_the_run(store: RunStore) -> None:
    await create(store, "r-1")
    with pytest.raises(RunAlreadyExists, match="a run with id 'r-1' already exists") as refused:
        await create(store, "r-1")
    assert refused.value.run_id == "r-1"
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


async def test_claims_filter_by_trace(store: RunStore) -> None:
    await create(store, "r-root", trace_id="t-1")
    await create(store, "r-root.1", trace_id="t-1", parent_run_id="r-root", parent_op_id="1")
    await suspended(store, "r-woken", trace_id="t-1", wake_at=5)
    await create(store, "r-other", trace_id="t-2")
    await suspended(store, "r-other-due", trace_id="t-2", wake_at=5)
    await create(store, "r-untraced", trace_id=None)
    claimed = await claim(store, now=10, trace_id="t-1")
    assert sorted(r.run_id for r in claimed) == ["r-root", "r-root.1", "r-woken"]
    assert await claim(store, now=10, trace_id="t-1") == []
    assert await claim(store, now=10, trace_id="t-3") == []
    assert [r.run_id for r in await claim(store, now=10, trace_id="t-2", run_id="r-other")] == [
        "r-other"
    ]
    others = {r.run_id: r for r in await store.list_runs()}
    assert others["r-other-due"].status == RunStatus.SUSPENDED
    assert others["r-untraced"].status == RunStatus.PENDING


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
    kid = new_run("r-child", parent_run_id="r-1", parent_op_id="3", created=1)
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
            children=[child(kid)],
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
        {"children": [child(new_run("r-new")), child(new_run("r-taken"))]},  # r-taken exists
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
                children=[child(new_run("r-stale-child"))],
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
            children=[child(c) for c in children],
            callbacks=[callback(c.run_id, "r-parent", kind=CallbackKind.INVOKE) for c in children],
            suspend=True,
        )
    )
    assert (await store.get_run("r-parent")).status == RunStatus.SUSPENDED
    kid = await claim_one(store, "r-kid-1", owner="w2", now=2)
    done = RunOutcome(RunStatus.SUCCEEDED, result='{"v": 1}')
    await store.commit(checkpoint(kid, now=3, outcome=done, wake_ups=[wake_parent(kid, done)]))
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
    failure = RunOutcome(RunStatus.FAILED, error=boom)
    await store.commit(
        checkpoint(kid, now=5, outcome=failure, wake_ups=[wake_parent(kid, failure)])
    )
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
            children=[child(kid_run)],
            callbacks=[callback("r-kid", "r-parent", kind=CallbackKind.INVOKE)],
            suspend=True,
        )
    )
    kid = await claim_one(store, "r-kid", owner="w2", now=2, lease=100)
    cancelled = await cancel_tree(store, "r-parent", 3)
    assert cancelled.status == RunStatus.CANCELLED
    assert (await store.get_run("r-kid")).cancel_requested  # held: it stops itself
    result = await store.commit(checkpoint(kid, now=4, ops=[step("1")]))
    assert result.cancel_requested
    error = ErrorInfo("RunCancelled", "run r-kid was cancelled")
    ended = RunOutcome(RunStatus.CANCELLED, error=error)
    # The parent ended first: the wake-up the engine sends it is skipped, not refused.
    await store.commit(checkpoint(kid, now=5, outcome=ended, wake_ups=[wake_parent(kid, ended)]))
    assert (await store.get_run("r-kid")).status == RunStatus.CANCELLED
    assert (await store.get_run("r-parent")).status == RunStatus.CANCELLED
