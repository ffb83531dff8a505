"""Queue statistics, against every adapter: what ``queue_stats`` counts per queue is what
a claim would take (runnable), what holds a live lease (running) and what waits for a
wake time still ahead (waiting), with when the oldest runnable run became due."""

from __future__ import annotations

from datetime import timedelta

from cadenza.ports.run_store import (
    CallbackResolution,
    CallbackStatus,
    QueueStats,
    RunOutcome,
    RunStatus,
    RunStore,
)
from tests.contract._support import (
    at,
    callback,
    checkpoint,
    claim,
    claim_one,
    create,
    suspended,
)


async def test_an_empty_store_reports_the_default_queue_empty(store: RunStore) -> None:
    assert await store.queue_stats(now=at(0)) == [QueueStats("default")]


async def test_queue_stats_count_what_claims_would_take_and_how_long_it_waited(
    store: RunStore,
) -> None:
    await create(store, "r-pending")  # due since it was created, at 0
    await suspended(store, "r-due", wake_at=6)
    await suspended(store, "r-later", wake_at=500)
    await suspended(store, "r-parked")  # no wake time: only a wake-up resumes it
    await create(store, "r-held")
    await claim_one(store, "r-held", now=0, lease=100)
    await create(store, "r-orphaned")
    await claim_one(store, "r-orphaned", now=0, lease=5)  # its worker died at 0
    await create(store, "r-done")
    done = await claim_one(store, "r-done")
    await store.commit(checkpoint(done, outcome=RunOutcome(RunStatus.SUCCEEDED, result="1")))
    await create(store, "r-failed", queue="billing")
    failed = await claim_one(store, "r-failed")
    await store.commit(checkpoint(failed, outcome=RunOutcome(RunStatus.FAILED)))
    await create(store, "r-bill", queue="billing", created=3)
    await suspended(store, "r-bill-later", wake_at=900, queue="billing")
    await create(store, "r-slow", queue="slow")
    await claim_one(store, "r-slow", now=0, lease=100)
    # Created at 0, woken at 8 when its callback completed: it has waited since 8.
    await create(store, "r-approved", queue="approvals")
    approved = await claim_one(store, "r-approved")
    await store.commit(
        checkpoint(approved, suspend=True, callbacks=[callback("cb-1", "r-approved")])
    )
    resolution = CallbackResolution("cb-1", CallbackStatus.SUCCEEDED, result='"yes"')
    assert await store.complete_callback(resolution, now=at(8))

    stats = await store.queue_stats(now=at(10))

    assert stats == [
        QueueStats("approvals", runnable=1, oldest_due_at=at(8)),
        QueueStats("billing", runnable=1, waiting=1, oldest_due_at=at(3)),
        QueueStats("default", runnable=3, running=1, waiting=1, oldest_due_at=at(0)),
        QueueStats("slow", running=1),
    ]
    by_queue = {s.queue: s for s in stats}
    assert by_queue["default"].oldest_age(at(10)) == timedelta(seconds=10)
    assert by_queue["approvals"].oldest_age(at(10)) == timedelta(seconds=2)
    assert by_queue["slow"].oldest_age(at(10)) == timedelta(0)

    # Exactly those runnable runs are what a claim takes; then they hold leases.
    claimed = await claim(store, owner="w2", now=10, lease=30)
    assert sorted(r.run_id for r in claimed) == [
        "r-approved",
        "r-bill",
        "r-due",
        "r-orphaned",
        "r-pending",
    ]
    assert await store.queue_stats(now=at(11)) == [
        QueueStats("approvals", running=1),
        QueueStats("billing", running=1, waiting=1),
        QueueStats("default", running=4, waiting=1),
        QueueStats("slow", running=1),
    ]


async def test_a_wake_time_or_lease_that_comes_makes_a_run_runnable_from_then(
    store: RunStore,
) -> None:
    await suspended(store, "r-timer", wake_at=50, queue="timers")
    await create(store, "r-lease", queue="timers")
    await claim_one(store, "r-lease", now=0, lease=70)

    assert await store.queue_stats(now=at(40)) == [
        QueueStats("default"),
        QueueStats("timers", running=1, waiting=1),
    ]
    assert await store.queue_stats(now=at(60)) == [
        QueueStats("default"),
        QueueStats("timers", runnable=1, running=1, oldest_due_at=at(50)),
    ]
    later = await store.queue_stats(now=at(100))
    assert later[1] == QueueStats("timers", runnable=2, oldest_due_at=at(50))
    assert later[1].oldest_age(at(100)) == timedelta(seconds=50)
