"""Semantics shared with AWS Lambda durable executions: batch accounting when a batch
completes early, callback failures and timeouts, replay-aware logging, and the trace a
crashed activation leaves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from cadenza import (
    CallbackFailed,
    CallbackHeartbeatTimedOut,
    CallbackTimedOut,
    CompletionConfig,
    CompletionReason,
    Context,
    Engine,
    ItemStatus,
    RunStatus,
    workflow,
)
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import RunRecord
from cadenza.testing import TestEnvironment

# --- batches decided early ------------------------------------------------------------


async def quick(value: int) -> int:
    return value


async def slow(value: int) -> int:
    await asyncio.sleep(30)  # cancelled when the batch is decided
    return value


async def race_item(ctx: Context, value: int) -> int:
    if value == 1:
        return await ctx.step(slow, value)
    await asyncio.sleep(0.05)  # let the slow item start before the fast one answers
    return await ctx.step(quick, value)


@workflow(name="t-aws-batch-early")
async def race(ctx: Context) -> dict[str, object]:
    batch = await ctx.map(
        [0, 1, 2, 3],
        race_item,
        max_concurrency=2,
        completion=CompletionConfig.first_successful(),
    )
    return {
        "statuses": [str(item.status) for item in batch.items],
        "counts": [
            batch.success_count,
            batch.failure_count,
            batch.started_count,
            batch.not_started_count,
            batch.total_count,
        ],
        "reason": str(batch.completion_reason),
        "status": str(batch.status),
        "has_failure": batch.has_failure,
    }


async def test_an_early_decision_tells_running_items_from_never_started_ones(
    env: TestEnvironment,
) -> None:
    run = await env.run(race)
    expected = {
        "statuses": ["SUCCEEDED", "STARTED", "NOT_STARTED", "NOT_STARTED"],
        "counts": [1, 0, 1, 2, 4],
        "reason": "MIN_SUCCESSFUL_REACHED",
        "status": "SUCCEEDED",
        "has_failure": False,
    }
    assert await env.result(run) == expected
    history = [e for e in await env.engine.store.history(run.run_id) if e.op_id == "1"]
    assert history[-1].details["started"] == 1 and history[-1].details["not_started"] == 2
    # The recorded result replays the same; the never-started items stay unstarted.
    replayed = await env.engine.result(run.run_id)
    assert replayed == expected


async def failing(value: int) -> int:
    raise ValueError(f"bad {value}")


async def fail_item(ctx: Context, value: int) -> int:
    from cadenza import RetryPolicy

    return await ctx.step(failing, value, retry=RetryPolicy(max_attempts=1))


@workflow(name="t-aws-batch-failure")
async def all_fail(ctx: Context) -> dict[str, object]:
    batch = await ctx.map(
        [1, 2, 3], fail_item, max_concurrency=1, completion=CompletionConfig.all_successful()
    )
    assert batch.completion_reason == CompletionReason.FAILURE_TOLERANCE_EXCEEDED
    return {
        "status": str(batch.status),
        "has_failure": batch.has_failure,
        "statuses": [str(i.status) for i in batch.items],
    }


async def test_a_batch_with_a_failed_item_has_failure_status(env: TestEnvironment) -> None:
    assert await env.result(await env.run(all_fail)) == {
        "status": str(ItemStatus.FAILED),
        "has_failure": True,
        "statuses": ["FAILED", "NOT_STARTED", "NOT_STARTED"],
    }


# --- replay-aware logging -------------------------------------------------------------


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """The messages written by workflow loggers, in order."""
    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage().split("] ", 1)[-1])

    handler = Collect(level=logging.INFO)
    target = logging.getLogger("cadenza.workflow")
    previous = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    yield written
    target.removeHandler(handler)
    target.setLevel(previous)


async def prepare(value: int) -> int:
    return value * 2


async def doubled(ctx: Context, value: int) -> int:
    result = await ctx.step(prepare, value)
    ctx.logger.info("child computed %s", result)  # after the child's last operation
    return result


@workflow(name="t-aws-log-after-child")
async def logs_after_child(ctx: Context) -> str:
    ctx.logger.info("start")
    value = await ctx.run_in_child_context(doubled, 21, name="double")
    ctx.logger.info("after child: %s", value)
    callback = await ctx.create_callback(name="go")
    answer = await callback.result()
    ctx.logger.info("answered %s", answer)
    return f"{value} {answer}"


async def test_each_log_line_is_written_once_across_suspend_and_resume(
    env: TestEnvironment, lines: list[str]
) -> None:
    run = await env.run(logs_after_child)
    assert run.status == RunStatus.SUSPENDED
    assert lines == ["start", "child computed 42", "after child: 42"]
    await env.succeed(await env.token(run), "yes")
    run = await env.resume(run)
    assert await env.result(run) == "42 yes"
    assert lines == ["start", "child computed 42", "after child: 42", "answered yes"]


# --- callbacks ------------------------------------------------------------------------


@workflow(name="t-aws-heartbeat")
async def watched_job(ctx: Context) -> dict[str, str]:
    callback = await ctx.create_callback(
        name="job", timeout=timedelta(hours=1), heartbeat_timeout=timedelta(minutes=10)
    )
    try:
        await callback.result()
    except CallbackHeartbeatTimedOut as exc:
        return {"kind": "heartbeat", "type": exc.error_type, "message": exc.message}
    except CallbackTimedOut as exc:
        return {"kind": "overall", "type": exc.error_type, "message": exc.message}
    return {"kind": "done"}


async def test_a_missed_heartbeat_is_its_own_timeout(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(watched_job)
    await fake_env.advance(timedelta(minutes=10))
    result = await fake_env.result(await fake_env.resume(run))
    assert result["kind"] == "heartbeat" and result["type"] == "CallbackHeartbeatTimedOut"
    assert "missed its heartbeat" in result["message"]
    assert "nothing was heard for 600s after it was created" in result["message"]
    assert issubclass(CallbackHeartbeatTimedOut, CallbackTimedOut)


async def test_the_overall_timeout_is_not_reported_as_a_missed_heartbeat(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(watched_job)
    token = await fake_env.token(run)
    for _ in range(6):  # heartbeats every 9 minutes keep it alive up to the hour
        await fake_env.advance(timedelta(minutes=9))
        await fake_env.engine.heartbeat_callback(token)
        assert (await fake_env.resume(run)).status == RunStatus.SUSPENDED
    await fake_env.advance(timedelta(minutes=6))  # the hour is up; the heartbeat is not
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    result = await fake_env.result(run)
    assert result["kind"] == "overall" and result["type"] == "CallbackTimedOut"
    assert "timed out at" in result["message"] and "heartbeat" not in result["message"]


async def submit(token: str) -> None:
    return None


@workflow(name="t-aws-wait-for-callback-failed")
async def asks_for_review(ctx: Context) -> dict[str, str]:
    try:
        await ctx.wait_for_callback(submit, name="review", timeout=timedelta(days=1))
    except CallbackFailed as exc:
        return {"raised": type(exc).__name__, "type": exc.error_type, "message": exc.message}
    return {"raised": "nothing"}


async def test_wait_for_callback_raises_callback_failed_for_an_external_failure(
    env: TestEnvironment,
) -> None:
    run = await env.run(asks_for_review)
    await env.fail(await env.token(run), "Rejected", "not this quarter")
    expected = {"raised": "CallbackFailed", "type": "Rejected", "message": "not this quarter"}
    assert await env.result(await env.resume(run)) == expected


@workflow(name="t-aws-unawaited-timeout")
async def busy_meanwhile(ctx: Context) -> str:
    callback = await ctx.create_callback(name="approve", timeout=timedelta(hours=1))
    await ctx.wait(timedelta(hours=3), name="other-work")
    try:
        return str(await callback.result())
    except CallbackTimedOut as exc:
        return f"timed out: {exc.message}"


async def test_an_unawaited_callback_times_out_at_its_deadline(
    fake_env: TestEnvironment,
) -> None:
    start = fake_env.engine.clock.now()
    run = await fake_env.run(busy_meanwhile)
    assert run.wake_at == start + timedelta(hours=1)  # the callback's deadline comes first
    await fake_env.advance(timedelta(hours=1))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUSPENDED and run.wake_at == start + timedelta(hours=3)
    history = await fake_env.engine.store.history(run.run_id)
    timed_out = [e for e in history if str(e.type) == "CallbackTimedOut"]
    assert len(timed_out) == 1 and timed_out[0].timestamp == start + timedelta(hours=1)

    await fake_env.advance(timedelta(hours=2))
    run = await fake_env.resume(run)
    assert (await fake_env.result(run)).startswith("timed out: callback 'approve' timed out at")
    types = await fake_env.history(run)
    # In the order things happened: the timeout, then the end of the other work.
    assert types.index("CallbackTimedOut") < types.index("WaitSucceeded")
    assert types.count("CallbackTimedOut") == 1


# --- an activation that died ------------------------------------------------------------

ran: list[str] = []
release = asyncio.Event()


async def reserve() -> str:
    ran.append("reserve")
    return "seat 12A"


async def charge() -> str:
    ran.append("charge")
    await release.wait()  # the first worker dies here
    return "charged"


@workflow(name="t-aws-lost-attempt")
async def booking(ctx: Context) -> str:
    seat = await ctx.step(reserve)
    paid = await ctx.step(charge)
    return f"{seat}, {paid}"


def second_worker(env: TestEnvironment) -> Engine:
    return Engine(
        env.engine.store,
        secret=b"test-secret-0123456789abcdef",
        clock=env.clock,
        artifacts=env.engine.artifacts,
        owner="worker-b",
    )


async def claim(engine: Engine) -> RunRecord:
    now = engine.clock.now()
    [claimed] = await engine.store.claim_runs(
        owner=engine.owner, now=now, lease_until=now + engine.lease, limit=1
    )
    return claimed


def ends(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    return [e.details for e in events if e.type == HistoryEventType.INVOCATION_COMPLETED]


async def test_a_worker_that_died_leaves_an_invocation_completed_with_the_reason(
    fake_env: TestEnvironment,
) -> None:
    ran.clear()
    release.clear()
    a, b = fake_env.engine, second_worker(fake_env)
    run = await a.start(booking)
    first = await claim(a)
    dying = asyncio.create_task(a.activate(first))
    while ran != ["reserve", "charge"]:  # noqa: ASYNC110 - polling a plain list
        await asyncio.sleep(0.001)
    dying.cancel()  # the process is gone: nothing more is written
    with pytest.raises(asyncio.CancelledError):
        await dying
    await fake_env.advance(a.lease + timedelta(seconds=1))
    release.set()

    result = await b.activate(await claim(b))
    assert result.status == RunStatus.SUCCEEDED
    assert await b.result(run.run_id) == "seat 12A, charged"
    assert ran == ["reserve", "charge", "charge"]  # the checkpointed step did not run again

    history = await b.store.history(run.run_id)
    lost, done = ends(history)
    assert lost["epoch"] == first.lease_epoch and lost["worker"] == a.owner
    assert lost["error"]["type"] == "LeaseLost"
    assert lost["error"]["message"].startswith(
        f"the worker {a.owner} stopped without checkpointing (lease epoch {first.lease_epoch})"
    )
    assert "before worker-b claimed the run" in lost["error"]["message"]
    assert done["epoch"] == first.lease_epoch + 1 and "error" not in done
    # It comes before anything the new activation records.
    types = [str(e.type) for e in history]
    assert types.index("InvocationCompleted") < types.index(
        "StepSucceeded", types.index("StepSucceeded") + 1
    )


@workflow(name="t-aws-lost-before-checkpoint")
async def greeting(ctx: Context) -> str:
    return await ctx.step(reserve)


async def test_a_claim_that_vanished_before_checkpointing_is_recorded_too(
    fake_env: TestEnvironment,
) -> None:
    a, b = fake_env.engine, second_worker(fake_env)
    run = await a.start(greeting)
    await claim(a)  # claimed, then the worker died before writing anything
    await fake_env.advance(a.lease + timedelta(seconds=1))
    assert (await b.activate(await claim(b))).status == RunStatus.SUCCEEDED
    lost, done = ends(await b.store.history(run.run_id))
    assert lost["epoch"] == 1 and "worker" not in lost
    assert lost["error"]["message"].startswith(
        "the worker that held the run stopped without checkpointing (lease epoch 1)"
    )
    assert done["epoch"] == 2


async def test_a_clean_suspend_and_resume_records_no_lost_attempt(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(busy_meanwhile)
    await fake_env.advance(timedelta(hours=3))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    details = ends(await fake_env.engine.store.history(run.run_id))
    assert [d["epoch"] for d in details] == [1, 2]
    assert all("error" not in d for d in details)


# --- the default retry policy -----------------------------------------------------------


def test_the_default_retry_policy_is_the_one_the_architecture_documents() -> None:
    import random

    from cadenza import RetryPolicy

    policy = RetryPolicy()
    assert (policy.max_attempts, policy.backoff_rate, policy.jitter) == (3, 2.0, 0.1)
    assert policy.initial_interval == timedelta(seconds=1)
    assert policy.max_interval == timedelta(minutes=5)
    rng = random.Random(7)
    first, second = policy.delay(1, rng), policy.delay(2, rng)
    assert timedelta(seconds=0.9) <= first <= timedelta(seconds=1.1)
    assert timedelta(seconds=1.8) <= second <= timedelta(seconds=2.2)
    assert not policy.should_retry(ValueError("still failing"), 3)
    aws_like = RetryPolicy(
        max_attempts=6,
        initial_interval=timedelta(seconds=5),
        max_interval=timedelta(seconds=60),
        jitter=0,
    )
    assert [aws_like.delay(n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 40, 60]


outage = {"down": True}


async def flaky() -> str:
    if outage["down"]:
        raise ConnectionError("the service is down")
    return "up"


@workflow(name="t-aws-retried-run")
async def retried(ctx: Context) -> str:
    from cadenza import RetryPolicy

    return await ctx.step(flaky, retry=RetryPolicy(max_attempts=1))


async def test_a_retried_run_records_no_lost_attempt(env: TestEnvironment) -> None:
    outage["down"] = True
    run = await env.run(retried)
    assert run.status == RunStatus.FAILED
    outage["down"] = False
    await env.engine.retry(run.run_id)  # moves the lease epoch on without a claim
    run = await env.resume(run)
    assert await env.result(run) == "up"
    details = ends(await env.engine.store.history(run.run_id))
    assert len(details) == 2 and all("error" not in d for d in details)


@workflow(name="t-aws-terminal-last")
async def terminal_last(ctx: Context, fail: bool) -> str:
    await ctx.step(lambda: "done", name="work")
    if fail:
        raise ValueError("broken on purpose")
    return "ok"


@pytest.mark.parametrize(
    ("fail", "terminal"), [(False, "ExecutionSucceeded"), (True, "ExecutionFailed")]
)
async def test_the_terminal_execution_event_comes_last(
    env: TestEnvironment, fail: bool, terminal: str
) -> None:
    run = await env.run(terminal_last, fail)
    types = [str(e.type) for e in await env.engine.store.history(run.run_id)]
    assert types[-2:] == ["InvocationCompleted", terminal]
    assert types.count(terminal) == 1
