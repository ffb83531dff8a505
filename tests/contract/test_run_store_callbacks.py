"""The run-store contract, continued: callbacks, cancellation, events and rules, queues."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cadenza.engine._cancellation import cancellation
from cadenza.errors import (
    CallbackNotFound,
    ErrorInfo,
    RunNotFound,
    RunStateError,
)
from cadenza.history import HistoryEventType
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackResolution,
    CallbackStatus,
    QueueConfig,
    Rule,
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
)
from tests.contract.conftest import StoreFactory

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
            children=[child(k) for k in kids],
            callbacks=[callback(k.run_id, "r-root", kind=CallbackKind.INVOKE) for k in kids],
            suspend=True,
        )
    )
    idle = await claim_one(store, "r-idle")
    await store.commit(
        checkpoint(
            idle,
            children=[child(new_run("r-grandkid", parent_run_id="r-idle", parent_op_id="1"))],
            callbacks=[callback("r-grandkid", "r-idle", kind=CallbackKind.INVOKE)],
            suspend=True,
        )
    )
    await claim_one(store, "r-busy", owner="w2", now=2, lease=100)

    cancelled = await cancel_tree(store, "r-root", 5)
    assert (cancelled.status, cancelled.cancel_requested) == (RunStatus.CANCELLED, True)
    assert cancelled.error is not None and cancelled.error.type == "RunCancelled"
    for run_id in ("r-idle", "r-grandkid"):
        assert (await store.get_run(run_id)).status == RunStatus.CANCELLED
        assert (await store.history(run_id))[-1].type == HistoryEventType.EXECUTION_CANCELLED
    busy = await store.get_run("r-busy")
    assert (busy.status, busy.cancel_requested) == (RunStatus.RUNNING, True)
    assert (await store.history("r-root"))[-1].type == HistoryEventType.EXECUTION_CANCELLED

    with pytest.raises(RunStateError):
        await store.request_cancel([cancellation("r-root", None, at(6))], now=at(6))
    with pytest.raises(RunNotFound):
        await store.request_cancel([cancellation("r-missing", None, at(6))], now=at(6))


async def test_cancelling_a_child_fails_the_parent_callback_and_wakes_it(
    store: RunStore,
) -> None:
    await create(store, "r-parent")
    parent = await claim_one(store, "r-parent")
    await store.commit(
        checkpoint(
            parent,
            children=[child(new_run("r-kid", parent_run_id="r-parent", parent_op_id="1"))],
            callbacks=[callback("r-kid", "r-parent", kind=CallbackKind.INVOKE)],
            suspend=True,
        )
    )
    await cancel_tree(store, "r-kid", 2)
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
