"""A durable workflow end to end on DynamoDB (moto on loopback): steps, a timer, a callback,
a map, a child run and an emitted event, with a value over the claim-check threshold, and
a cancellation."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.history import HistoryEventType
from cadenza.serde import reference_in
from cadenza.testing import FakeClock, TestEnvironment

pytest.importorskip("boto3", reason="boto3 (the aws extra) is not installed")

calls: Counter[str] = Counter()
BIG = 70 * 1024  # over the 64 KiB claim-check threshold


def research(topic: str) -> str:
    calls["research"] += 1
    return f"notes on {topic}"


def draft(notes: str) -> str:
    calls["draft"] += 1
    return notes.upper() + "!" * BIG


def score(index: int) -> int:
    calls["score"] += 1
    return index * index


@workflow(name="t-ddb-child")
async def summarise(ctx: Context, text: str) -> int:
    return len(await ctx.step(lambda: text.strip("!"), name="strip"))


async def square(ctx: Context, index: int) -> int:
    return await ctx.step(score, index)


async def submit(token: str) -> None:
    return None


@workflow(name="t-ddb-report")
async def report(ctx: Context, topic: str) -> dict[str, Any]:
    notes = await ctx.step(research, topic)
    text = await ctx.step(draft, notes)
    await ctx.wait(timedelta(minutes=5), name="cool-down")
    squares = (await ctx.map([1, 2, 3, 4], square, name="squares")).results()
    approval = await ctx.wait_for_callback(submit, name="approve", timeout=timedelta(days=1))
    length = await ctx.invoke(summarise, text, name="summary")
    await ctx.emit("report.done", {"topic": topic}, source="tests")
    return {"squares": squares, "approval": approval, "length": length, "size": len(text)}


@pytest.fixture
async def ddb_env(
    dynamodb_store: Callable[..., Any],
) -> AsyncIterator[TestEnvironment]:
    calls.clear()
    async with TestEnvironment(store=dynamodb_store(), clock=FakeClock()) as environment:
        yield environment


async def test_a_durable_workflow_runs_end_to_end_on_dynamodb(ddb_env: TestEnvironment) -> None:
    env = ddb_env
    run = await env.run(report, "tides")
    assert run.status == RunStatus.SUSPENDED  # the timer
    await env.advance(timedelta(minutes=5))
    run = await env.resume(run)
    assert run.status == RunStatus.SUSPENDED  # the callback
    await env.succeed(await env.token(run), {"by": "ada"})
    run = await env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert await env.result(run) == {
        "squares": [1, 4, 9, 16],
        "approval": {"by": "ada"},
        "length": len("NOTES ON TIDES"),
        "size": len("NOTES ON TIDES") + BIG,
    }
    # Every step ran once, however many activations replayed the journal.
    assert calls == Counter(research=1, draft=1, score=4)
    journal = {op.name: op for op in await env.engine.store.load_journal(run.run_id)}
    assert journal["draft"].result is not None and reference_in(journal["draft"].result)
    [child] = await env.engine.store.list_runs(parent_run_id=run.run_id)
    assert child.status == RunStatus.SUCCEEDED
    [event] = await env.engine.store.list_events(limit=5)
    assert event.event["detail-type"] == "report.done"
    history = await env.history(run)
    assert history[0] == "ExecutionStarted" and history[-1] == "ExecutionSucceeded"


async def test_cancelling_a_waiting_run_cancels_it_on_dynamodb(ddb_env: TestEnvironment) -> None:
    run = await ddb_env.run(report, "storms")
    assert run.status == RunStatus.SUSPENDED
    await ddb_env.engine.cancel(run.run_id)
    cancelled = await ddb_env.engine.store.get_run(run.run_id)
    assert cancelled.status == RunStatus.CANCELLED
    assert (await ddb_env.history(run))[-1] == HistoryEventType.EXECUTION_CANCELLED


async def approval(ctx: Context, index: int) -> int:
    callback = await ctx.create_callback(name="ok", timeout=timedelta(days=1))
    return int(await callback.result()) + index


@workflow(name="t-ddb-fan-out")
async def fan_out(ctx: Context, size: int) -> int:
    return sum((await ctx.map(list(range(size)), approval, name="approvals")).results())


async def test_a_map_waiting_on_more_callbacks_than_a_transaction_holds(
    ddb_env: TestEnvironment,
) -> None:
    # 60 callbacks and their locators are 120 new items in one checkpoint.
    run = await ddb_env.run(fan_out, 60)
    assert run.status == RunStatus.SUSPENDED
    tokens = await ddb_env.tokens(run)
    assert len(tokens) == 60
    for token in tokens:
        await ddb_env.succeed(token, 1)
    run = await ddb_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert await ddb_env.result(run) == sum(range(60)) + 60
