"""Steps: checkpointed once, never re-run on replay, retried per policy, failing clearly."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from pydantic import BaseModel

from cadenza import (
    Context,
    RetryPolicy,
    RunStatus,
    StepContext,
    StepFailed,
    StepSemantics,
    StepTimedOut,
    workflow,
)
from cadenza.journal import OpStatus
from cadenza.testing import TestEnvironment

calls: Counter[str] = Counter()


class Quote(BaseModel):
    city: str
    price: float


async def quote(city: str) -> Quote:
    calls["quote"] += 1
    return Quote(city=city, price=99.5)


@workflow(name="t-steps-replay")
async def replayed(ctx: Context, city: str) -> dict[str, object]:
    first = await ctx.step(quote, city)
    await ctx.wait(timedelta(minutes=5))  # suspend: the next activation replays `quote`
    assert isinstance(first, Quote)  # rebuilt from the journal with its type
    return {"city": first.city, "price": first.price}


async def test_replay_returns_recorded_result_without_running_the_step_again(
    fake_env: TestEnvironment,
) -> None:
    calls.clear()
    run = await fake_env.run(replayed, "Lisbon")
    assert run.status == RunStatus.SUSPENDED
    await fake_env.advance(timedelta(minutes=5))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    assert await fake_env.result(run) == {"city": "Lisbon", "price": 99.5}
    assert calls["quote"] == 1


flaky_attempts: list[int] = []


async def flaky(step: StepContext) -> str:
    flaky_attempts.append(step.attempt)
    if step.attempt < 3:
        raise ConnectionError(f"attempt {step.attempt} failed")
    return step.idempotency_key


@workflow(name="t-steps-retry")
async def retried(ctx: Context) -> str:
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=10), jitter=0)
    return await ctx.step(flaky, retry=policy)


async def test_retries_wait_durably_with_backoff_and_keep_the_idempotency_key(
    fake_env: TestEnvironment,
) -> None:
    flaky_attempts.clear()
    run = await fake_env.run(retried)
    assert run.status == RunStatus.SUSPENDED and flaky_attempts == [1]
    assert run.wake_at == fake_env.engine.clock.now() + timedelta(seconds=10)
    await fake_env.advance(10)
    run = await fake_env.resume(run)
    assert flaky_attempts == [1, 2]
    assert run.wake_at == fake_env.engine.clock.now() + timedelta(seconds=20)  # backoff x2
    await fake_env.advance(20)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    assert flaky_attempts == [1, 2, 3]
    assert await fake_env.result(run) == f"{run.run_id}/1"
    history = await fake_env.history(run)
    assert history.count("StepFailed") == 2 and history.count("StepSucceeded") == 1


async def always_fails() -> None:
    calls["always_fails"] += 1
    raise ValueError("the supplier said no")


@workflow(name="t-steps-exhausted")
async def exhausted(ctx: Context) -> str:
    try:
        await ctx.step(
            always_fails, retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(0))
        )
    except StepFailed as exc:
        return f"{exc.error_type}: {exc.message}"
    return "unreachable"


async def test_exhausted_retries_raise_step_failed_that_the_workflow_can_catch(
    env: TestEnvironment,
) -> None:
    calls.clear()
    run = await env.run(exhausted, linger=1)
    assert run.status == RunStatus.SUCCEEDED
    assert await env.result(run) == "ValueError: the supplier said no"
    assert calls["always_fails"] == 2


@workflow(name="t-steps-nonretryable")
async def non_retryable(ctx: Context) -> None:
    policy = RetryPolicy(
        max_attempts=5, initial_interval=timedelta(0), non_retryable_errors=[ValueError]
    )
    await ctx.step(always_fails, retry=policy)


async def test_non_retryable_errors_fail_the_run_at_once(env: TestEnvironment) -> None:
    calls.clear()
    run = await env.run(non_retryable)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "ValueError"
    assert calls["always_fails"] == 1


async def slow() -> str:
    await asyncio.sleep(5)
    return "late"


@workflow(name="t-steps-timeout")
async def timed_out(ctx: Context) -> str:
    try:
        await ctx.step(slow, timeout=timedelta(milliseconds=20), retry=RetryPolicy(max_attempts=1))
    except StepTimedOut as exc:
        return exc.message
    return "unreachable"


async def test_step_timeout(env: TestEnvironment) -> None:
    run = await env.run(timed_out)
    assert "did not finish within" in await env.result(run)


def not_json() -> object:
    return object()


@workflow(name="t-steps-unserializable")
async def unserializable(ctx: Context) -> None:
    await ctx.step(not_json)


async def test_unserializable_result_fails_the_run_with_a_clear_message(
    env: TestEnvironment,
) -> None:
    run = await env.run(unserializable)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert "cannot be stored as JSON" in run.error.message
    assert "not_json" in run.error.message  # names the step


def sync_add(a: int, b: int) -> int:
    return a + b


@workflow(name="t-steps-sync")
async def sync_steps(ctx: Context) -> int:
    total = await ctx.step(sync_add, 1, 2)
    return await ctx.step(lambda: sync_add(total, 10), name="add-ten")


async def test_sync_functions_and_lambdas_are_steps(env: TestEnvironment) -> None:
    run = await env.run(sync_steps)
    assert await env.result(run) == 13


at_most_once_calls: list[int] = []


async def charge(step: StepContext) -> str:
    at_most_once_calls.append(step.attempt)
    return "charged"


@workflow(name="t-steps-at-most-once")
async def at_most_once(ctx: Context) -> str:
    return await ctx.step(
        charge,
        semantics=StepSemantics.AT_MOST_ONCE,
        retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(0)),
    )


async def test_at_most_once_attempt_interrupted_is_not_run_again(env: TestEnvironment) -> None:
    """An attempt whose start was recorded but whose end was not counts as failed."""
    at_most_once_calls.clear()
    run = await env.start(at_most_once)
    # Simulate a crash: record attempt 1 as started, as the engine does before running it.
    from cadenza.journal import OpRecord, OpType
    from cadenza.ports.run_store import Checkpoint

    store = env.engine.store
    now = env.engine.clock.now()
    [claimed] = await store.claim_runs(owner="dead", now=now, lease_until=now, limit=1)
    await store.commit(
        Checkpoint(
            run.run_id,
            "dead",
            claimed.lease_epoch,
            now,
            ops=[OpRecord("1", OpType.STEP, "charge", OpStatus.STARTED, attempt=1)],
        )
    )
    run = await env.resume(run)  # lease already expired: the run is taken over and replayed
    assert run.status == RunStatus.SUCCEEDED
    assert at_most_once_calls == [2]  # attempt 1 was never re-run
    history = await env.history(run)
    assert "StepFailed" in history  # the interrupted attempt is reported
