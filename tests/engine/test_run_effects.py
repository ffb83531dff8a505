"""The engine decides what a run's checkpoints do to other runs, and says so in them: the
checkpoint that ends a child carries its parent's wake-up, and the checkpoint that ends a
cancelled run cancels the children it still waits for — even ones no cancellation request
listed. The store only applies what it is told (tests/contract/test_run_store_instructions.py).
"""

from __future__ import annotations

from datetime import timedelta

from cadenza import Context, workflow
from cadenza.engine._cancellation import cancellation
from cadenza.ports.run_store import (
    CallbackResolution,
    CallbackStatus,
    Checkpoint,
    RunRecord,
    RunStatus,
    WakeUp,
)
from cadenza.testing import FakeClock, TestEnvironment


@workflow(name="effects-child")
async def effects_child(ctx: Context, n: int) -> int:
    cb = await ctx.create_callback(timeout=timedelta(hours=1))
    await cb.result()
    return n * 2


@workflow(name="effects-parent")
async def effects_parent(ctx: Context, n: int) -> int:
    return await ctx.invoke(effects_child, n) + 1


@workflow(name="effects-due-parent")
async def effects_due_parent(ctx: Context, n: int) -> int:
    # A callback nobody completes gives the waiting parent a wake time, so it can be claimed.
    await ctx.create_callback(timeout=timedelta(minutes=1))
    return await ctx.invoke(effects_child, n) + 1


def recorder(env: TestEnvironment) -> list[Checkpoint]:
    seen: list[Checkpoint] = []

    def listener(run: RunRecord, cp: Checkpoint) -> None:
        seen.append(cp)

    env.engine.subscribe(listener)
    return seen


async def test_the_checkpoint_ending_a_child_carries_the_parent_wake_up() -> None:
    async with TestEnvironment(clock=FakeClock()) as env:
        seen = recorder(env)
        parent = await env.run(effects_parent, 4)
        assert parent.status == RunStatus.SUSPENDED
        child_id = f"{parent.run_id}.1"
        started = [c for cp in seen for c in cp.children]
        assert [c.run.run_id for c in started] == [child_id]
        assert started[0].started.details == {"parent_run_id": parent.run_id, "parent_op_id": "1"}

        await env.succeed(await env.token(child_id))
        done = await env.resume(parent)
        assert done.status == RunStatus.SUCCEEDED and await env.result(done) == 9
        [ending] = [cp for cp in seen if cp.run_id == child_id and cp.outcome is not None]
        assert ending.wake_ups == [
            WakeUp(parent.run_id, CallbackResolution(child_id, CallbackStatus.SUCCEEDED, "8"))
        ]
        # A run without a parent wakes nobody.
        [last] = [cp for cp in seen if cp.run_id == parent.run_id and cp.outcome is not None]
        assert last.wake_ups == [] and last.cancels == []


async def test_a_cancelled_run_cancels_the_children_it_still_waits_for() -> None:
    clock = FakeClock()
    async with TestEnvironment(clock=clock) as env:
        parent = await env.run(effects_due_parent, 4)
        child_id = f"{parent.run_id}.2"
        store = env.engine.store
        await env.advance(timedelta(minutes=1))
        # A worker holds the parent when the cancellation comes, and the request names the
        # parent alone: only the parent's own end can reach the child.
        now = clock.now()
        await store.claim_runs(
            owner="other",
            now=now,
            lease_until=now + timedelta(seconds=5),
            limit=1,
            run_id=parent.run_id,
        )
        flagged = await store.request_cancel([cancellation(parent.run_id, None, now)], now=now)
        assert (flagged.status, flagged.cancel_requested) == (RunStatus.RUNNING, True)
        waiting = await store.get_run(child_id)
        assert (waiting.status, waiting.cancel_requested) == (RunStatus.SUSPENDED, False)

        await env.advance(timedelta(seconds=6))  # that worker died: its lease runs out
        ended = await env.resume(parent)
        assert ended.status == RunStatus.CANCELLED
        child = await store.get_run(child_id)
        assert (child.status, child.cancel_requested) == (RunStatus.CANCELLED, True)
        assert child.error is not None and child.error.type == "RunCancelled"
