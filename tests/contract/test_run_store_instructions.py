"""The run-store contract for what a checkpoint does to other runs: the store applies the
engine's instructions (child runs, wake-ups, cancellations) exactly as written, and decides
nothing from a run's parent or children by itself."""

from __future__ import annotations

import pytest

from cadenza.engine._cancellation import cancellation
from cadenza.errors import CallbackNotFound, ErrorInfo, RunStateError
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackResolution,
    CallbackStatus,
    Cancellation,
    ChildRun,
    RunOutcome,
    RunRecord,
    RunStatus,
    RunStore,
    WakeUp,
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
    wake_parent,
)

DONE = RunOutcome(RunStatus.SUCCEEDED, result='"done"')


async def parent_waiting_for(store: RunStore, *kids: str, suspend: bool = True) -> RunRecord:
    """r-parent with one INVOKE callback per child it started: SUSPENDED on them, or
    still RUNNING under w1's lease."""
    await create(store, "r-parent")
    parent = await claim_one(store, "r-parent")
    runs = [new_run(k, parent_run_id="r-parent", parent_op_id=str(i)) for i, k in enumerate(kids)]
    await store.commit(
        checkpoint(
            parent,
            children=[child(r) for r in runs],
            callbacks=[callback(k, "r-parent", kind=CallbackKind.INVOKE) for k in kids],
            suspend=suspend,
        )
    )
    return await store.get_run("r-parent")


async def test_a_child_that_ends_without_a_wake_up_leaves_its_parent_alone(
    store: RunStore,
) -> None:
    await parent_waiting_for(store, "r-kid")
    kid = await claim_one(store, "r-kid", owner="w2", now=2)
    await store.commit(checkpoint(kid, now=3, outcome=DONE))

    assert (await store.get_run("r-kid")).status == RunStatus.SUCCEEDED
    assert (await store.get_callback("r-kid")).status == CallbackStatus.PENDING
    assert (await store.get_run("r-parent")).status == RunStatus.SUSPENDED


async def test_a_wake_up_resolves_the_callback_it_names_with_the_outcome_it_carries(
    store: RunStore,
) -> None:
    """The store takes the resolution as written: here a run with no parent wakes another
    run's plain callback, with a result that is not its own."""
    await create(store, "r-waiter")
    waiter = await claim_one(store, "r-waiter")
    await store.commit(checkpoint(waiter, callbacks=[callback("cb-1", "r-waiter")], suspend=True))
    await create(store, "r-other")
    other = await claim_one(store, "r-other", owner="w2", now=2)
    told = CallbackResolution("cb-1", CallbackStatus.FAILED, error=ErrorInfo("Nope", "no"))
    await store.commit(checkpoint(other, now=3, outcome=DONE, wake_ups=[WakeUp("r-waiter", told)]))

    resolved = await store.get_callback("cb-1")
    assert (resolved.status, resolved.error, resolved.completed_at) == (
        CallbackStatus.FAILED,
        ErrorInfo("Nope", "no"),
        at(3),
    )
    assert (await store.get_run("r-waiter")).status == RunStatus.PENDING
    assert (await store.get_run("r-other")).result == '"done"'


async def test_a_wake_up_for_a_callback_already_completed_is_skipped(store: RunStore) -> None:
    await parent_waiting_for(store, "r-kid")
    first = CallbackResolution("r-kid", CallbackStatus.SUCCEEDED, result='"first"')
    assert await store.complete_callback(first, now=at(2))
    kid = await claim_one(store, "r-kid", owner="w2", now=3)
    await store.commit(checkpoint(kid, now=4, outcome=DONE, wake_ups=[wake_parent(kid, DONE)]))

    assert (await store.get_run("r-kid")).status == RunStatus.SUCCEEDED
    assert (await store.get_callback("r-kid")).result == '"first"'


async def test_a_wake_up_naming_a_callback_its_run_lacks_refuses_the_checkpoint(
    store: RunStore,
) -> None:
    await parent_waiting_for(store, "r-kid")
    kid = await claim_one(store, "r-kid", owner="w2", now=2)
    wrong = WakeUp("r-parent", CallbackResolution("cb-missing", CallbackStatus.SUCCEEDED))
    with pytest.raises(CallbackNotFound, match="cb-missing"):
        await store.commit(checkpoint(kid, now=3, ops=[step("1")], outcome=DONE, wake_ups=[wrong]))

    still = await store.get_run("r-kid")
    assert (still.status, still.lease_owner) == (RunStatus.RUNNING, "w2")
    assert await store.load_journal("r-kid") == []
    assert (await store.get_run("r-parent")).status == RunStatus.SUSPENDED


async def test_a_child_run_starts_with_the_event_the_checkpoint_gives_it(
    store: RunStore,
) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    kid = new_run("r-1.2", parent_run_id="r-1", parent_op_id="2")
    event = HistoryEvent(
        seq=0,
        type=HistoryEventType.EXECUTION_STARTED,
        timestamp=at(7),
        details={"parent_run_id": "r-1", "parent_op_id": "2", "by": "engine"},
    )
    await store.commit(checkpoint(run, children=[ChildRun(kid, event)]))

    [written] = await store.history("r-1.2")
    assert (written.type, written.timestamp, written.details) == (
        HistoryEventType.EXECUTION_STARTED,
        at(7),
        {"parent_run_id": "r-1", "parent_op_id": "2", "by": "engine"},
    )
    assert (await store.get_run("r-1.2")).parent_op_id == "2"


async def test_a_cancelled_run_checkpoint_cancels_exactly_the_runs_it_lists(
    store: RunStore,
) -> None:
    """Idle runs end, a held one is flagged, an ended one is left alone, and a child the
    checkpoint does not list goes on."""
    kids = ("r-idle", "r-busy", "r-done", "r-unlisted")
    parent = await parent_waiting_for(store, *kids, suspend=False)
    done = await claim_one(store, "r-done", owner="w3", now=1)
    await store.commit(checkpoint(done, now=2, outcome=DONE))
    await claim_one(store, "r-busy", owner="w2", now=2, lease=100)
    error = ErrorInfo("RunCancelled", "run r-parent was cancelled")
    cancels = [cancellation(k, None, at(4)) for k in ("r-idle", "r-busy", "r-done")]
    await store.commit(
        checkpoint(
            parent,
            now=4,
            outcome=RunOutcome(RunStatus.CANCELLED, error=error),
            cancels=cancels,
        )
    )

    idle = await store.get_run("r-idle")
    assert (idle.status, idle.cancel_requested) == (RunStatus.CANCELLED, True)
    assert idle.error == ErrorInfo("RunCancelled", "run r-idle was cancelled")
    last = (await store.history("r-idle"))[-1]
    assert (last.type, last.timestamp) == (HistoryEventType.EXECUTION_CANCELLED, at(4))
    busy = await store.get_run("r-busy")
    assert (busy.status, busy.cancel_requested) == (RunStatus.RUNNING, True)
    assert (await store.get_run("r-done")).status == RunStatus.SUCCEEDED
    unlisted = await store.get_run("r-unlisted")
    assert (unlisted.status, unlisted.cancel_requested) == (RunStatus.PENDING, False)


async def test_a_cancellation_reaches_the_parent_only_through_its_wake_up(
    store: RunStore,
) -> None:
    await parent_waiting_for(store, "r-quiet", "r-loud")
    event = HistoryEvent(seq=0, type=HistoryEventType.EXECUTION_CANCELLED, timestamp=at(5))
    error = ErrorInfo("RunCancelled", "stopped")
    quiet = Cancellation("r-quiet", error, event)
    await store.request_cancel([quiet], now=at(5))
    assert (await store.get_run("r-quiet")).status == RunStatus.CANCELLED
    assert (await store.get_callback("r-quiet")).status == CallbackStatus.PENDING
    assert (await store.get_run("r-parent")).status == RunStatus.SUSPENDED

    await store.request_cancel([cancellation("r-loud", "r-parent", at(6))], now=at(6))
    failed = await store.get_callback("r-loud")
    assert (failed.status, failed.error) == (
        CallbackStatus.FAILED,
        ErrorInfo("RunCancelled", "run r-loud was cancelled"),
    )
    assert (await store.get_run("r-parent")).status == RunStatus.PENDING


async def test_request_cancel_touches_only_the_runs_it_is_given(store: RunStore) -> None:
    await parent_waiting_for(store, "r-kid")
    cancelled = await store.request_cancel([cancellation("r-parent", None, at(5))], now=at(5))
    assert cancelled.status == RunStatus.CANCELLED
    kid = await store.get_run("r-kid")
    assert (kid.status, kid.cancel_requested) == (RunStatus.PENDING, False)


async def test_a_cancellation_that_cannot_be_applied_whole_writes_nothing(
    store: RunStore,
) -> None:
    await parent_waiting_for(store, "r-kid")
    event = HistoryEvent(seq=0, type=HistoryEventType.EXECUTION_CANCELLED, timestamp=at(5))
    wrong = WakeUp("r-parent", CallbackResolution("cb-missing", CallbackStatus.FAILED))
    plan = [
        cancellation("r-parent", None, at(5)),
        Cancellation("r-kid", ErrorInfo("RunCancelled", "x"), event, wrong),
    ]
    # The parent is ended first, so the kid's wake-up is skipped: nothing to refuse.
    await store.request_cancel(plan, now=at(5))
    assert (await store.get_run("r-kid")).status == RunStatus.CANCELLED

    await create(store, "r-solo")
    await create(store, "r-other")
    solo_wake = WakeUp("r-other", CallbackResolution("cb-missing", CallbackStatus.FAILED))
    with pytest.raises(CallbackNotFound):
        await store.request_cancel(
            [Cancellation("r-solo", ErrorInfo("RunCancelled", "x"), event, solo_wake)], now=at(6)
        )
    solo = await store.get_run("r-solo")
    assert (solo.status, solo.cancel_requested) == (RunStatus.PENDING, False)
    assert [e.type for e in await store.history("r-solo")] == [HistoryEventType.EXECUTION_STARTED]


async def test_request_cancel_refuses_a_run_that_already_ended(store: RunStore) -> None:
    await create(store, "r-1")
    run = await claim_one(store, "r-1")
    await store.commit(checkpoint(run, outcome=DONE))
    with pytest.raises(RunStateError):
        await store.request_cancel([cancellation("r-1", None, at(2))], now=at(2))
    assert (await store.get_run("r-1")).status == RunStatus.SUCCEEDED
