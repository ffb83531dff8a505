"""History compaction: a run that loops for weeks keeps a bounded history, and what reads
the history — the trace, its spans, the activation count, the lost-attempt check — reads
the same run as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza import Context, workflow
from cadenza.clock import FakeClock
from cadenza.engine import _compaction
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.ports.run_store import RunStatus
from cadenza.telemetry._spans import RunSpan, run_span
from cadenza.telemetry._trace import load_trace
from cadenza.testing import InMemoryRunStore, TestEnvironment

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOOPS = 1000


@workflow(name="compaction-agent")
async def agent(ctx: Context, loops: int) -> int:
    total = 0
    for i in range(loops):
        total += await ctx.step(lambda i=i: i, name="think")
        await ctx.wait(timedelta(minutes=1))
    return total


def event(seq: int, type: H, op_id: str | None = None, **details: Any) -> HistoryEvent:
    return HistoryEvent(seq, type, T0 + timedelta(seconds=seq), op_id=op_id, details=details)


def test_the_plan_folds_finished_noise_and_keeps_what_matters() -> None:
    history = [event(1, H.EXECUTION_STARTED), event(2, H.ACTION_REQUESTED, by="ops")]
    seq = 3
    for n in range(30):  # a step retried once, then succeeded; an activation ends
        op = str(n)
        history += [
            event(seq, H.STEP_STARTED, op),
            event(seq + 1, H.STEP_FAILED, op, next_attempt_at="later"),
            event(seq + 2, H.STEP_STARTED, op),
            event(seq + 3, H.STEP_SUCCEEDED, op),
            event(seq + 4, H.INVOCATION_COMPLETED, epoch=n),
        ]
        seq += 5
    history += [
        event(seq, H.STEP_STARTED, "failed"),
        event(seq + 1, H.STEP_FAILED, "failed", error={"type": "X"}),
        event(seq + 2, H.INVOCATION_COMPLETED, epoch=99, error={"type": "LeaseLost"}),
        event(seq + 3, H.STEP_STARTED, "cond"),
        event(seq + 4, H.STEP_SUCCEEDED, "cond", next_attempt_at="later"),  # still checking
    ]
    history += [event(seq + 5 + i, H.WAIT_STARTED, f"w{i}") for i in range(_compaction.KEEP_LAST)]

    plan = _compaction.plan("r-1", 7, history, bound=100)

    assert plan is not None and plan.expected_epoch == 7
    kept = [e for e in history if e.seq not in plan.drop]
    assert len(plan.drop) == 150 and plan.summary.seq == plan.drop[0] == 3
    assert plan.summary.details["counts"] == {
        "InvocationCompleted": 30,
        "StepFailed": 30,
        "StepStarted": 60,
        "StepSucceeded": 30,
    }
    assert plan.summary.details["operations"] == 30
    assert {e.type for e in kept[:2]} == {H.EXECUTION_STARTED, H.ACTION_REQUESTED}
    assert [e.op_id for e in kept if e.type in (H.STEP_STARTED, H.STEP_FAILED)][:3] == [
        "failed",
        "failed",
        "cond",
    ]
    assert any(e.details.get("error") for e in kept if e.type == H.INVOCATION_COMPLETED)
    assert _compaction.plan("r-1", 7, history, bound=len(history)) is None

    # Compacting again merges the earlier summary: there is only ever one.
    compacted = sorted([plan.summary, *kept], key=lambda e: e.seq)
    more = compacted + [event(10_000 + i, H.INVOCATION_COMPLETED) for i in range(300)]
    second = _compaction.plan("r-1", 8, more, bound=100)  # keeps the last 100
    assert second is not None and plan.summary.seq in second.drop
    assert second.summary.seq == plan.summary.seq
    assert second.summary.details["counts"]["InvocationCompleted"] == 30 + 200
    assert second.summary.details["events"] == 150 + 200


async def _loop(env: TestEnvironment, loops: int) -> str:
    run = await env.run(agent, loops)
    while run.status == RunStatus.SUSPENDED:
        await env.advance(timedelta(minutes=1))
        run = await env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    return run.run_id


def _spans(span: RunSpan) -> list[tuple[Any, ...]]:
    return [(s.op_id, s.name, s.kind, s.status, s.attempts, s.start, s.end) for s in span.ops]


async def test_a_run_of_a_thousand_activations_keeps_a_bounded_history() -> None:
    # The in-memory store keeps the test quick: replaying 1,000 activations is quadratic.
    async with TestEnvironment(clock=FakeClock(T0), store=InMemoryRunStore()) as env:
        env.engine.history_bound = 300
        written: list[HistoryEvent] = []  # every event as it was committed
        env.engine.subscribe(lambda run, checkpoint: written.extend(checkpoint.history))
        run_id = await _loop(env, LOOPS)

        kept = await env.engine.store.history(run_id)
        everything = 1 + len(written)  # and ExecutionStarted
        assert everything > 5 * LOOPS
        assert len(kept) <= 300 + 6 * _compaction.CHECK_EVERY, len(kept)  # checked that often
        [summary] = [e for e in kept if e.type == H.HISTORY_COMPACTED]
        assert summary.details["events"] + len(kept) - 1 == everything
        assert summary.details["operations"] > LOOPS
        assert kept[0].type == H.EXECUTION_STARTED and kept[-1].type == H.EXECUTION_SUCCEEDED
        assert [e.seq for e in kept] == sorted(e.seq for e in kept)

        # `cadenza runs trace` reads the same run as from the whole history.
        run = await env.engine.store.get_run(run_id)
        journal = await env.engine.store.load_journal(run_id)
        full = run_span(run, written, journal)
        [node] = (await load_trace(env.engine, run_id)).roots
        assert full.activations == LOOPS + 1
        assert node.span.activations == full.activations
        assert len(full.ops) == 2 * LOOPS
        assert _spans(node.span) == _spans(full)
        assert node.span.end == full.end

        # The journal keeps one record per operation: replay needs them all.
        assert len(journal) == 2 * LOOPS
        assert await env.result(run_id) == sum(range(LOOPS))


async def test_without_a_bound_the_history_is_kept_whole() -> None:
    async with TestEnvironment(clock=FakeClock(T0), store=InMemoryRunStore()) as env:
        env.engine.history_bound = None
        run_id = await _loop(env, 3 * _compaction.CHECK_EVERY)
        history = await env.engine.store.history(run_id)
        assert all(e.type != H.HISTORY_COMPACTED for e in history)
        assert len(history) > 5 * 3 * _compaction.CHECK_EVERY
