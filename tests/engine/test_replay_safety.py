"""Replay safety: non-determinism detection, version pinning, leases and fencing,
cancellation, and bad input that loses nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cadenza import (
    Context,
    InvalidInput,
    RunStatus,
    WorkflowDefinitionError,
    workflow,
)
from cadenza.engine.engine import Engine
from cadenza.engine.worker import Worker
from cadenza.errors import RunStateError
from cadenza.testing import TestEnvironment
from cadenza.workflow import define, register


async def step_a() -> str:
    return "a"


async def step_b() -> str:
    return "b"


async def test_changed_code_fails_the_run_with_a_non_determinism_error(
    fake_env: TestEnvironment,
) -> None:
    async def original(ctx: Context) -> str:
        await ctx.step(step_a)
        await ctx.wait(timedelta(seconds=1))
        return "done"

    async def edited(ctx: Context) -> str:
        await ctx.step(step_b)  # same position, another operation
        await ctx.wait(timedelta(seconds=1))
        return "done"

    edited.__qualname__ = original.__qualname__  # the same function, edited and redeployed
    register(define(original, name="t-nondeterminism", version="1"))
    run = await fake_env.run(define(original, name="t-nondeterminism", version="1"))
    assert run.status == RunStatus.SUSPENDED
    # Deploy the edited code under the same name and version (the mistake).
    register(define(edited, name="t-nondeterminism", version="1"))
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "NonDeterminismError"
    assert "step 'step_a'" in run.error.message and "step 'step_b'" in run.error.message
    assert "new workflow version" in run.error.message


@workflow(name="t-pinned", version="1")
async def pinned_v1(ctx: Context) -> str:
    await ctx.wait(timedelta(seconds=1))
    return "v1"


async def test_runs_stay_on_the_version_that_started_them(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(pinned_v1)

    @workflow(name="t-pinned", version="2")
    async def pinned_v2(ctx: Context) -> str:
        return "v2"

    newer = await fake_env.run(pinned_v2)
    await fake_env.advance(1)
    assert await fake_env.result(await fake_env.resume(run)) == "v1"
    assert await fake_env.result(newer) == "v2"


def test_workflow_definition_errors_are_raised_at_definition() -> None:
    with pytest.raises(WorkflowDefinitionError, match="async def"):

        @workflow(name="t-not-async")
        def not_async(ctx: Context) -> None: ...

    with pytest.raises(WorkflowDefinitionError, match="takes 3"):

        @workflow(name="t-too-many")
        async def too_many(ctx: Context, a: int, b: int) -> None: ...


@workflow(name="t-typed-input")
async def typed(ctx: Context, n: int) -> int:
    return n


async def test_bad_input_is_refused_before_anything_is_stored(env: TestEnvironment) -> None:
    with pytest.raises(InvalidInput, match="does not fit"):
        await env.start(typed, "not a number")
    assert await env.engine.store.list_runs() == []


gate = asyncio.Event()
executions: list[str] = []


async def blocking_step() -> str:
    executions.append("started")
    await gate.wait()
    return "finished"


@workflow(name="t-fencing")
async def fenced(ctx: Context) -> str:
    return await ctx.step(blocking_step)


async def test_a_worker_that_lost_its_lease_cannot_commit(fake_env: TestEnvironment) -> None:
    """Worker A stalls past its lease; B takes the run over; A's late checkpoint is refused."""
    gate.clear()
    executions.clear()
    store, clock = fake_env.engine.store, fake_env.clock
    a = fake_env.engine
    b = Engine(
        store,
        secret=b"test-secret-0123456789abcdef",
        clock=clock,
        artifacts=a.artifacts,
        owner="worker-b",
    )
    run = await a.start(fenced)
    now = clock.now()  # type: ignore[union-attr]
    [claimed] = await store.claim_runs(owner=a.owner, now=now, lease_until=now + a.lease, limit=1)
    stalled = asyncio.create_task(a.activate(claimed))
    while not executions:  # noqa: ASYNC110 - polling a plain list the step appends to
        await asyncio.sleep(0.001)
    await fake_env.advance(a.lease + timedelta(seconds=1))  # A's lease expires
    gate.set()
    worker_b = Worker(b, poll_interval=0.01)
    [taken] = await store.claim_runs(
        owner="worker-b",
        now=clock.now(),  # type: ignore[union-attr]
        lease_until=clock.now() + b.lease,
        limit=1,
    )  # type: ignore[union-attr]
    assert taken.lease_epoch == claimed.lease_epoch + 1
    result_a = await stalled
    assert result_a.aborted is not None and type(result_a.aborted).__name__ == "LeaseLost"
    result_b = await b.activate(taken)
    assert result_b.status == RunStatus.SUCCEEDED
    assert await a.result(run.run_id) == "finished"
    history = await fake_env.history(run)
    assert history.count("StepSucceeded") == 1  # only B's checkpoint landed
    assert worker_b is not None


@workflow(name="t-cancel-child")
async def cancel_child(ctx: Context) -> None:
    callback = await ctx.create_callback(name="never")
    await callback.result()


@workflow(name="t-cancel-parent")
async def cancel_parent(ctx: Context) -> None:
    await ctx.invoke(cancel_child)


async def test_cancel_stops_a_run_and_its_children(env: TestEnvironment) -> None:
    run = await env.run(cancel_parent)
    [kid] = await env.engine.store.list_runs(parent_run_id=run.run_id)
    token = await env.token(kid)
    cancelled = await env.engine.cancel(run.run_id)
    assert cancelled.status == RunStatus.CANCELLED
    assert (await env.engine.store.get_run(kid.run_id)).status == RunStatus.CANCELLED
    with pytest.raises(RunStateError, match="already ended"):
        await env.succeed(token, "too late")
    with pytest.raises(RunStateError, match="nothing to cancel"):
        await env.engine.cancel(run.run_id)
    assert "ExecutionStopped" in await env.history(run)
