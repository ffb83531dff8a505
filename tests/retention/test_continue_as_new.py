"""``ctx.continue_as_new``: a long-lived loop hands over to a fresh run, linked in history,
instead of growing one journal without bound."""

from __future__ import annotations

from datetime import timedelta

from cadenza import Context, workflow
from cadenza.clock import FakeClock
from cadenza.history import HistoryEventType as H
from cadenza.ports.run_store import RunStatus
from cadenza.testing import TestEnvironment


@workflow(name="can-counter")
async def counter(ctx: Context, n: int) -> int:
    done = await ctx.step(lambda: n + 1, name="work")
    if done < 4:
        try:
            ctx.continue_as_new(done)
        except Exception:  # a workflow cannot swallow the hand-over by accident
            return -1
    return done


@workflow(name="can-child")
async def child(ctx: Context, n: int) -> int:
    ctx.continue_as_new(n + 1)


@workflow(name="can-parent")
async def parent(ctx: Context) -> int:
    return int(await ctx.invoke(child, 1))


async def test_a_run_continues_as_new_runs_linked_in_one_trace() -> None:
    async with TestEnvironment(clock=FakeClock()) as env:
        first = await env.run(counter, 0)

        store = env.engine.store
        chain = [first]
        while True:  # follow the links the histories keep
            history = await store.history(chain[-1].run_id)
            assert history[-1].type == H.EXECUTION_SUCCEEDED  # still the last event
            handover = [e for e in history if e.type == H.EXECUTION_CONTINUED_AS_NEW]
            if not handover:
                break
            new = await store.get_run(handover[0].details["run_id"])
            started = (await store.history(new.run_id))[0]
            assert started.details["continued_from"] == chain[-1].run_id
            assert len(await store.load_journal(new.run_id)) == 1  # a fresh journal
            chain.append(new)

        assert len(chain) == 4
        assert {r.run_id for r in await store.list_runs(trace_id=first.trace_id)} == {
            r.run_id for r in chain
        }
        assert [(await store.get_run(r.run_id)).status for r in chain] == [RunStatus.SUCCEEDED] * 4
        assert await env.result(chain[-1]) == 4
        assert await env.result(first) is None


async def test_a_child_run_cannot_continue_as_new() -> None:
    async with TestEnvironment(clock=FakeClock()) as env:
        run = await env.run(parent)
        for _ in range(3):
            if run.status.terminal:
                break
            await env.advance(timedelta(seconds=1))
            run = await env.resume(run)
        assert run.status == RunStatus.FAILED
        assert run.error is not None and "only a root run" in run.error.message
