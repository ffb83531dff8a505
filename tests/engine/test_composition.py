"""map / parallel completion rules, child contexts, child runs."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cadenza import (
    BatchFailed,
    ChildContextFailed,
    CompletionConfig,
    CompletionReason,
    Context,
    InvocationFailed,
    ItemStatus,
    RunStatus,
    WorkflowDefinitionError,
    workflow,
)
from cadenza.retry import NO_RETRY
from cadenza.testing import TestEnvironment

running = {"now": 0, "peak": 0}


async def square(n: int) -> int:
    running["now"] += 1
    running["peak"] = max(running["peak"], running["now"])
    await asyncio.sleep(0.002)
    running["now"] -= 1
    if n == 3:
        raise ValueError("three is unlucky")
    return n * n


async def square_item(ctx: Context, n: int) -> int:
    return await ctx.step(square, n, retry=NO_RETRY)


@workflow(name="t-map")
async def squares(ctx: Context, n: int) -> dict[str, object]:
    batch = await ctx.map(range(n), square_item, max_concurrency=3)
    return {
        "results": batch.results(),
        "failed": [i.index for i in batch.items if i.status == ItemStatus.FAILED],
        "errors": [e.message for e in batch.errors()],
        "reason": str(batch.completion_reason),
    }


async def test_map_is_index_ordered_capped_and_reports_item_errors(env: TestEnvironment) -> None:
    running["peak"] = 0
    run = await env.run(squares, 8, linger=1)
    assert await env.result(run) == {
        "results": [0, 1, 4, 16, 25, 36, 49],
        "failed": [3],
        "errors": ["three is unlucky"],
        "reason": "ALL_COMPLETED",
    }
    assert running["peak"] == 3


@workflow(name="t-map-min-successful")
async def first_two(ctx: Context) -> dict[str, object]:
    batch = await ctx.map(
        [1, 2, 4, 5, 6],
        square_item,
        completion=CompletionConfig(min_successful=2),
        max_concurrency=1,
    )
    return {
        "reason": str(batch.completion_reason),
        "ok": batch.success_count,
        "abandoned": batch.started_count,
        "never_started": batch.not_started_count,
        "total": batch.total_count,
    }


async def test_map_completes_early_at_min_successful(env: TestEnvironment) -> None:
    result = await env.result(await env.run(first_two))
    assert result == {
        "reason": "MIN_SUCCESSFUL_REACHED",
        "ok": 2,
        "abandoned": 0,  # one item at a time: none was running when the goal was met
        "never_started": 3,
        "total": 5,
    }


@workflow(name="t-map-tolerance")
async def strict(ctx: Context) -> str:
    batch = await ctx.map(
        [3, 1, 2], square_item, max_concurrency=1, completion=CompletionConfig.all_successful()
    )
    assert batch.completion_reason == CompletionReason.FAILURE_TOLERANCE_EXCEEDED
    try:
        batch.throw_if_error()
    except BatchFailed as exc:
        return exc.message
    return "unreachable"


async def test_failure_tolerance_stops_the_batch(env: TestEnvironment) -> None:
    assert "1 of 3 items failed" in await env.result(await env.run(strict))


def test_completion_config_is_validated_at_definition() -> None:
    with pytest.raises(WorkflowDefinitionError):
        CompletionConfig(tolerated_failure_percentage=120)
    with pytest.raises(WorkflowDefinitionError):
        CompletionConfig(min_successful=-1)


@workflow(name="t-map-suspend")
async def approvals(ctx: Context, names: list[str]) -> list[object]:
    async def ask(child: Context, name: str) -> object:
        callback = await child.create_callback(name=f"approve-{name}")
        return await callback.result()

    return (await ctx.map(names, ask)).results()


async def test_map_items_suspend_and_resume_independently(env: TestEnvironment) -> None:
    run = await env.run(approvals, ["ada", "bob"])
    tokens = await env.tokens(run)
    assert run.status == RunStatus.SUSPENDED and len(tokens) == 2
    await env.succeed(tokens[1], "bob-ok")
    run = await env.resume(run)
    assert run.status == RunStatus.SUSPENDED  # ada still pending
    await env.succeed((await env.tokens(run))[0], "ada-ok")
    assert await env.result(await env.resume(run)) == ["ada-ok", "bob-ok"]


@workflow(name="t-parallel")
async def branches(ctx: Context) -> list[object]:
    async def a(c: Context) -> str:
        return await c.step(lambda: "a", name="a")

    async def b(c: Context) -> int:
        inner = await c.run_in_child_context(
            lambda cc: cc.step(lambda: 2, name="two"), name="nested"
        )
        return inner * 10  # type: ignore[no-any-return]

    return (await ctx.parallel([a, b])).results()


async def test_parallel_branches_with_nested_child_contexts(env: TestEnvironment) -> None:
    run = await env.run(branches)
    assert await env.result(run) == ["a", 20]
    journal = {op.op_id for op in await env.engine.store.load_journal(run.run_id)}
    assert {"1", "1.1", "1.1.1", "1.2", "1.2.1", "1.2.1.1"} <= journal  # ids nest by position


@workflow(name="t-child-context-failure")
async def guarded(ctx: Context) -> str:
    async def risky(c: Context) -> None:
        await c.step(square, 3, retry=NO_RETRY)

    try:
        await ctx.run_in_child_context(risky, name="risky")
    except ChildContextFailed as exc:  # the original error's type and message travel along
        return f"{exc.error_type}: {exc.message}"
    return "unreachable"


async def test_child_context_failure_propagates_and_can_be_caught(env: TestEnvironment) -> None:
    run = await env.run(guarded)
    assert await env.result(run) == "ValueError: three is unlucky"


@workflow(name="t-invoke-child")
async def child(ctx: Context, n: int) -> int:
    if n < 0:
        raise ValueError("negative")
    return await ctx.step(lambda: n + 1, name="inc")


@workflow(name="t-invoke-parent")
async def parent(ctx: Context, n: int) -> object:
    try:
        return await ctx.invoke(child, n)
    except InvocationFailed as exc:
        return f"child failed: {exc.error_type}"


async def test_invoke_runs_a_child_and_returns_its_result(env: TestEnvironment) -> None:
    run = await env.run(parent, 41)
    assert await env.result(run) == 42
    [kid] = await env.engine.store.list_runs(parent_run_id=run.run_id)
    assert kid.status == RunStatus.SUCCEEDED and kid.workflow == "t-invoke-child"
    assert "ChainedInvokeSucceeded" in await env.history(run)


async def test_invoke_reports_child_failure(env: TestEnvironment) -> None:
    run = await env.run(parent, -1)
    assert await env.result(run) == "child failed: ValueError"


@workflow(name="t-determinism")
async def deterministic(ctx: Context) -> dict[str, object]:
    stamp = ctx.now()
    ids = [ctx.uuid(), ctx.uuid()]
    draw = ctx.random()
    await ctx.wait(timedelta(seconds=1))
    assert ctx.now() >= stamp
    return {"stamp": stamp.isoformat(), "ids": ids, "draw": draw}


async def test_now_uuid_random_are_replay_safe(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(deterministic)
    journal = await fake_env.engine.store.load_journal(run.run_id)
    recorded_now = next(op for op in journal if op.type == "now")
    await fake_env.advance(5)
    result = await fake_env.result(await fake_env.resume(run))
    assert result["stamp"] == recorded_now.started_at.isoformat()  # type: ignore[union-attr]
    assert len(set(result["ids"])) == 2
    # The same run id gives the same values: replay from scratch on a copy of the journal.
    assert 0 <= result["draw"] < 1


@workflow(name="t-state")
async def stateful(ctx: Context, goal: str) -> int:
    ctx.state.goal = goal
    ctx.state.plan = [{"action": "count", "status": "PENDING"}]
    n = await ctx.step(lambda: 7, name="count")
    ctx.state.plan[0].update(status="DONE", result=n)
    await ctx.wait(timedelta(seconds=1))
    ctx.state.status = "COMPLETED"
    return n


async def test_state_document_is_checkpointed_and_rebuilt_by_replay(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(stateful, "count things")
    suspended_state = run.state
    assert suspended_state["plan"] == [{"action": "count", "status": "DONE", "result": 7}]
    assert suspended_state["goal"] == "count things"
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    # Replay rebuilt the same plan before going on; nothing was lost or doubled.
    assert run.state["plan"] == suspended_state["plan"]
    assert run.state["status"] == "COMPLETED"
    assert run.state["metadata"]["invocationCount"] == 2


@workflow(name="t-big-payload")
async def big(ctx: Context) -> int:
    blob = await ctx.step(lambda: "x" * 200_000, name="blob")
    await ctx.wait(timedelta(seconds=1))
    return len(blob)


async def test_large_results_are_claim_checked_and_restored_on_replay(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(big)
    [step] = [
        op for op in await fake_env.engine.store.load_journal(run.run_id) if op.name == "blob"
    ]
    assert step.result is not None and len(step.result) < 200  # a reference, not the blob
    assert step.result.startswith(f'@artifact {{"key":"runs/{run.run_id}/sha256-')
    await fake_env.advance(1)
    assert await fake_env.result(await fake_env.resume(run)) == 200_000


@workflow(name="t-bad-concurrency")
async def bad_concurrency(ctx: Context) -> None:
    await ctx.map([1], square_item, max_concurrency=0)


async def test_bad_batch_configuration_fails_the_run_clearly(env: TestEnvironment) -> None:
    run = await env.run(bad_concurrency)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert "max_concurrency must be >= 1" in run.error.message


@workflow(name="t-state-in-children")
async def state_in_children(ctx: Context) -> dict[str, object]:
    async def tally(c: Context, n: int) -> int:
        value = await c.step(lambda: n * 10, name="ten")
        c.state.context["results"][f"item{n}"] = value
        return value

    async def note(c: Context) -> None:
        c.state["noted"] = await c.step(lambda: "yes", name="note")

    await ctx.map([1, 2, 3], tally)
    await ctx.run_in_child_context(note, name="note")
    await ctx.wait(timedelta(seconds=1))
    return {"results": ctx.state.context["results"], "noted": ctx.state.get("noted")}


async def test_state_written_inside_child_contexts_survives_replay(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(state_in_children)
    before = run.state
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    expected = {"results": {"item1": 10, "item2": 20, "item3": 30}, "noted": "yes"}
    assert await fake_env.result(run) == expected
    assert run.state["context"] == before["context"] and run.state["noted"] == "yes"


async def test_usage_of_model_calls_in_a_map_is_counted_once_across_replays(
    fake_env: TestEnvironment,
) -> None:
    from cadenza.agents import call_model
    from cadenza.testing import ScriptedModel

    model = ScriptedModel(name="scripted:fanout", default="ok")

    @workflow(name="t-usage-in-map")
    async def fan(ctx: Context) -> int:
        await ctx.map([1, 2], lambda c, i: call_model(c, model, f"item {i}"))
        await ctx.wait(timedelta(seconds=1))
        return int(ctx.state.metadata["usage"]["requests"])

    run = await fake_env.run(fan)
    assert run.state["metadata"]["usage"]["requests"] == 2
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert await fake_env.result(run) == 2 and len(model.requests) == 2
    assert run.state["metadata"]["usage"]["requests"] == 2


async def test_an_operation_added_inside_a_finished_child_context_never_runs_for_it(
    fake_env: TestEnvironment,
) -> None:
    """A finished child context is not called again (as in AWS), so code added inside it
    concerns new runs only; a record from before children kept their state changes is
    still replayed through, and there the addition is non-determinism."""
    from cadenza.engine.activation import Activation
    from cadenza.workflow import define, register

    async def original(ctx: Context) -> None:
        await ctx.run_in_child_context(lambda c: c.step(lambda: 1, name="one"), name="group")
        await ctx.wait(timedelta(seconds=1))

    async def edited(ctx: Context) -> None:
        async def group(c: Context) -> None:
            await c.step(lambda: 1, name="one")
            await c.step(lambda: 2, name="two")  # new: would run live inside a finished group

        await ctx.run_in_child_context(group, name="group")
        await ctx.wait(timedelta(seconds=1))

    edited.__qualname__ = original.__qualname__
    register(define(original, name="t-finished-child", version="1"))
    run = await fake_env.run(define(original, name="t-finished-child", version="1"))
    definition = define(edited, name="t-finished-child", version="1")
    register(definition)
    store = fake_env.engine.store
    journal = await store.load_journal(run.run_id)
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    assert "1.2" not in {op.op_id for op in await store.load_journal(run.run_id)}

    legacy = [
        op.evolve(data={k: v for k, v in op.data.items() if k != "state_changes"}) for op in journal
    ]
    stored = await store.get_run(run.run_id)
    callbacks = await store.load_callbacks(run.run_id)
    act = Activation(fake_env.engine, stored, definition, legacy, callbacks, check_only=True)
    await act.execute()
    assert act.divergence is not None and act.divergence[0] == "1.2"
