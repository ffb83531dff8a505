"""Retry options: strategy functions, jitter modes, and a logger that also writes on replay."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

import pytest

from cadenza import (
    Context,
    InvalidInput,
    JitterStrategy,
    RetryDecision,
    RetryPolicy,
    RunStatus,
    StepContext,
    StepFailed,
    workflow,
)
from cadenza.errors import WorkflowDefinitionError
from cadenza.testing import TestEnvironment

attempts: list[int] = []
decisions: list[tuple[str, int]] = []


async def flaky(step: StepContext) -> str:
    attempts.append(step.attempt)
    if step.attempt < 3:
        raise ConnectionError(f"attempt {step.attempt} refused")
    return "ok"


def linear(error: BaseException, attempt: int) -> RetryDecision:
    decisions.append((type(error).__name__, attempt))
    if attempt >= 5:
        return RetryDecision(should_retry=False)
    return RetryDecision(should_retry=True, delay=timedelta(seconds=7 * attempt))


@workflow(name="t-retry-strategy")
async def with_strategy(ctx: Context) -> str:
    return await ctx.step(flaky, retry=linear)


async def test_a_strategy_function_decides_each_retry_and_its_delay_is_durable(
    fake_env: TestEnvironment,
) -> None:
    attempts.clear()
    decisions.clear()
    run = await fake_env.run(with_strategy)
    assert run.status == RunStatus.SUSPENDED and attempts == [1]
    assert run.wake_at == fake_env.engine.clock.now() + timedelta(seconds=7)
    await fake_env.advance(7)
    run = await fake_env.resume(run)
    assert attempts == [1, 2]
    assert run.wake_at == fake_env.engine.clock.now() + timedelta(seconds=14)
    await fake_env.advance(14)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED and await fake_env.result(run) == "ok"
    assert decisions == [("ConnectionError", 1), ("ConnectionError", 2)]


async def always_fails() -> None:
    attempts.append(0)
    raise ValueError("the supplier said no")


def give_up(error: BaseException, attempt: int) -> RetryDecision:
    decisions.append((type(error).__name__, attempt))
    return RetryDecision(should_retry=isinstance(error, ConnectionError), delay=timedelta(0))


@workflow(name="t-retry-strategy-stop")
async def stopped(ctx: Context) -> str:
    try:
        await ctx.step(always_fails, retry=give_up)
    except StepFailed as exc:
        return f"{exc.error_type}: {exc.message}"
    return "unreachable"


async def test_a_strategy_that_says_stop_fails_the_step_at_once(env: TestEnvironment) -> None:
    attempts.clear()
    decisions.clear()
    run = await env.run(stopped)
    assert run.status == RunStatus.SUCCEEDED
    assert await env.result(run) == "ValueError: the supplier said no"
    assert attempts == [0] and decisions == [("ValueError", 1)]


async def rejects_input() -> None:
    attempts.append(0)
    raise InvalidInput("the order id is malformed")


def always_retry(error: BaseException, attempt: int) -> RetryDecision:
    decisions.append((type(error).__name__, attempt))
    return RetryDecision(should_retry=attempt < 10, delay=timedelta(0))


@workflow(name="t-retry-strategy-nonretryable")
async def non_retryable(ctx: Context) -> None:
    await ctx.step(rejects_input, retry=always_retry)


async def test_errors_that_cannot_succeed_again_are_never_retried_by_a_strategy(
    env: TestEnvironment,
) -> None:
    attempts.clear()
    decisions.clear()
    run = await env.run(non_retryable)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "InvalidInput"
    assert attempts == [0]
    assert decisions == []  # not even asked: retrying cannot help


def confused(error: BaseException, attempt: int) -> RetryDecision:
    return True  # type: ignore[return-value]


@workflow(name="t-retry-strategy-bad")
async def bad_strategy(ctx: Context) -> None:
    await ctx.step(always_fails, retry=confused)


async def test_a_strategy_that_returns_no_decision_fails_the_run_and_says_why(
    env: TestEnvironment,
) -> None:
    run = await env.run(bad_strategy)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert "confused" in run.error.message and "RetryDecision" in run.error.message


def test_a_policy_is_itself_a_strategy() -> None:
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=3), jitter=0)
    assert policy(ConnectionError("x"), 1) == RetryDecision(True, timedelta(seconds=3))
    assert policy(ConnectionError("x"), 2) == RetryDecision(False)
    assert RetryDecision.retry(timedelta(seconds=3)) == RetryDecision(True, timedelta(seconds=3))
    assert RetryDecision.no_retry() == RetryDecision(should_retry=False)


@workflow(name="t-retry-engine-default-strategy")
async def default_strategy(ctx: Context) -> str:
    return await ctx.step(flaky)  # no retry= of its own: the engine's default decides


async def test_the_engine_default_retry_may_be_a_strategy_function() -> None:
    from cadenza.testing import FakeClock

    attempts.clear()
    decisions.clear()
    async with TestEnvironment(clock=FakeClock(), default_retry=linear) as env:
        run = await env.run(default_strategy)
        assert run.status == RunStatus.SUSPENDED and attempts == [1]
        assert run.wake_at == env.engine.clock.now() + timedelta(seconds=7)
        await env.advance(7)
        run = await env.resume(run)
        assert run.wake_at == env.engine.clock.now() + timedelta(seconds=14)
        await env.advance(14)
        run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED and await env.result(run) == "ok"
    assert attempts == [1, 2, 3]
    assert decisions == [("ConnectionError", 1), ("ConnectionError", 2)]


@workflow(name="t-retry-engine-default-stop")
async def default_stop(ctx: Context) -> str:
    try:
        await ctx.step(always_fails)
    except StepFailed as exc:
        return exc.error_type
    return "unreachable"


async def test_a_default_strategy_that_says_stop_fails_steps_without_their_own_retry() -> None:
    attempts.clear()
    decisions.clear()
    async with TestEnvironment(default_retry=give_up) as env:
        run = await env.run(default_stop)
        assert await env.result(run) == "ValueError"
    assert attempts == [0] and decisions == [("ValueError", 1)]


async def test_a_default_retry_that_is_not_callable_is_refused() -> None:
    from cadenza.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="RetryDecision"):
        async with TestEnvironment(default_retry=3) as env:  # type: ignore[arg-type]
            await env.run(default_stop)


# --- jitter modes -------------------------------------------------------------------------


def _delays(jitter: float | JitterStrategy) -> list[float]:
    policy = RetryPolicy(initial_interval=timedelta(seconds=10), jitter=jitter)
    rng = random.Random(7)
    return [policy.delay(1, rng).total_seconds() for _ in range(200)]


def test_jitter_modes_draw_from_their_ranges() -> None:
    assert set(_delays(JitterStrategy.NONE)) == {10.0}
    full = _delays(JitterStrategy.FULL)
    assert all(0 <= d <= 10 for d in full) and min(full) < 3  # reaches well below half
    half = _delays(JitterStrategy.HALF)
    assert all(5 <= d <= 10 for d in half) and min(half) < 6
    spread = _delays(0.1)  # the default: ±10 %
    assert all(9 <= d <= 11 for d in spread) and max(spread) > 10
    assert RetryPolicy().jitter == 0.1
    assert _delays(0) == [10.0] * 200


def test_jitter_rejects_values_outside_its_range() -> None:
    with pytest.raises(WorkflowDefinitionError, match="JitterStrategy"):
        RetryPolicy(jitter=1.5)


@workflow(name="t-retry-full-jitter")
async def full_jitter(ctx: Context) -> str:
    policy = RetryPolicy(
        max_attempts=3, initial_interval=timedelta(seconds=100), jitter=JitterStrategy.FULL
    )
    return await ctx.step(flaky, retry=policy)


async def test_a_jittered_delay_is_recorded_once_and_replay_keeps_it(
    fake_env: TestEnvironment,
) -> None:
    attempts.clear()
    start = fake_env.engine.clock.now()
    run = await fake_env.run(full_jitter)
    assert run.status == RunStatus.SUSPENDED and run.wake_at is not None
    wake_at = run.wake_at
    assert start <= wake_at <= start + timedelta(seconds=100)
    # Woken early, the run replays the failed attempt and waits for the same recorded time.
    early = (wake_at - fake_env.engine.clock.now()).total_seconds() / 2
    await fake_env.advance(early)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUSPENDED and run.wake_at == wake_at and attempts == [1]
    await fake_env.advance(wake_at - fake_env.engine.clock.now())
    run = await fake_env.resume(run)
    assert attempts == [1, 2]


# --- logging during replay ----------------------------------------------------------------


async def noop() -> str:
    return "done"


@workflow(name="t-retry-log-quiet")
async def quiet_log(ctx: Context) -> None:
    ctx.logger.info("before the wait")
    await ctx.step(noop)
    await ctx.wait(timedelta(minutes=1))
    ctx.logger.info("after the wait")


@workflow(name="t-retry-log-replay")
async def replay_log(ctx: Context) -> None:
    log = ctx.get_logger(suppress_replay_logs=False)
    log.info("before the wait")
    await ctx.step(noop)
    await ctx.wait(timedelta(minutes=1))
    log.info("after the wait")


async def _lines(env: TestEnvironment, wf: object, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.set_level(logging.INFO, logger="cadenza.workflow")
    run = await env.run(wf)  # type: ignore[arg-type]
    assert run.status == RunStatus.SUSPENDED
    await env.advance(timedelta(minutes=1))
    run = await env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    prefix = f"[{run.run_id}]"
    return [
        r.getMessage().removeprefix(prefix).strip()
        for r in caplog.records
        if r.name.startswith("cadenza.workflow.t-retry-log")
    ]


async def test_the_default_logger_writes_each_line_once_across_suspend_and_resume(
    fake_env: TestEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    assert await _lines(fake_env, quiet_log, caplog) == ["before the wait", "after the wait"]


async def test_a_logger_told_not_to_suppress_replay_writes_again_and_marks_replayed_lines(
    fake_env: TestEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    assert await _lines(fake_env, replay_log, caplog) == [
        "before the wait",
        "(replay) before the wait",
        "after the wait",
    ]
