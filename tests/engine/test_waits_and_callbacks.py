"""Durable waits, callbacks (success, failure, timeout, heartbeat) and conditions."""

from __future__ import annotations

from datetime import timedelta

from cadenza import (
    CallbackFailed,
    CallbackTimedOut,
    Context,
    RunStatus,
    WaitDecision,
    poll_until,
    workflow,
)
from cadenza.testing import TestEnvironment


@workflow(name="t-wait")
async def sleeper(ctx: Context) -> str:
    await ctx.wait(timedelta(hours=1), name="nap")
    return "rested"


async def test_wait_suspends_until_due_and_fires_once(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(sleeper)
    assert run.status == RunStatus.SUSPENDED
    await fake_env.advance(timedelta(minutes=59))
    assert (await fake_env.resume(run)).status == RunStatus.SUSPENDED  # not yet
    await fake_env.advance(timedelta(minutes=1))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    history = await fake_env.history(run)
    assert history.count("WaitStarted") == 1 and history.count("WaitSucceeded") == 1


@workflow(name="t-callback")
async def approval(ctx: Context, amount: int) -> str:
    callback = await ctx.create_callback(name="approve", timeout=timedelta(hours=2))
    ctx.state["token_issued"] = True
    try:
        answer = await callback.result()
    except CallbackFailed as exc:
        return f"rejected: {exc.error_type}: {exc.message}"
    except CallbackTimedOut:
        return "nobody answered"
    return f"approved {amount} by {answer['by']}"


async def test_callback_success_resumes_with_the_payload(env: TestEnvironment) -> None:
    run = await env.run(approval, 120)
    assert run.status == RunStatus.SUSPENDED
    assert run.state["token_issued"] is True  # state written with the suspension
    await env.succeed(await env.token(run), {"by": "grace"})
    run = await env.resume(run)
    assert await env.result(run) == "approved 120 by grace"


async def test_callback_failure_raises_callback_failed(env: TestEnvironment) -> None:
    run = await env.run(approval, 120)
    await env.fail(await env.token(run), "Rejected", "over budget")
    assert await env.result(await env.resume(run)) == "rejected: Rejected: over budget"


async def test_callback_times_out(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(approval, 120)
    assert run.wake_at == fake_env.engine.clock.now() + timedelta(hours=2)
    await fake_env.advance(timedelta(hours=2))
    run = await fake_env.resume(run)
    assert await fake_env.result(run) == "nobody answered"
    assert "CallbackTimedOut" in await fake_env.history(run)


@workflow(name="t-heartbeat")
async def heartbeat_job(ctx: Context) -> str:
    callback = await ctx.create_callback(name="job", heartbeat_timeout=timedelta(minutes=10))
    try:
        return str((await callback.result())["status"])
    except CallbackTimedOut:
        return "worker went silent"


async def test_heartbeats_keep_a_callback_alive_and_silence_times_it_out(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(heartbeat_job)
    token = await fake_env.token(run)
    for _ in range(3):  # 24 minutes in all, never 10 without a heartbeat
        await fake_env.advance(timedelta(minutes=8))
        await fake_env.engine.heartbeat_callback(token)
        assert (await fake_env.resume(run)).status == RunStatus.SUSPENDED
    await fake_env.succeed(token, {"status": "done"})
    assert await fake_env.result(await fake_env.resume(run)) == "done"

    silent = await fake_env.run(heartbeat_job)
    await fake_env.advance(timedelta(minutes=10))
    assert await fake_env.result(await fake_env.resume(silent)) == "worker went silent"


submitted: list[str] = []


async def notify(token: str) -> None:
    submitted.append(token)


@workflow(name="t-wait-for-callback")
async def wait_for_callback(ctx: Context) -> object:
    return await ctx.wait_for_callback(notify, name="review", timeout=timedelta(days=1))


async def test_wait_for_callback_hands_the_token_to_the_submitter(env: TestEnvironment) -> None:
    submitted.clear()
    run = await env.run(wait_for_callback)
    assert submitted == [await env.token(run)]
    await env.succeed(submitted[0], {"ok": True})
    assert await env.result(await env.resume(run)) == {"ok": True}
    assert len(submitted) == 1  # the submitter step is not re-run on replay


polls: list[int] = []


async def check_job(state: dict[str, int]) -> dict[str, int]:
    polls.append(state["checks"])
    return {"checks": state["checks"] + 1}


@workflow(name="t-condition")
async def condition(ctx: Context) -> dict[str, int]:
    return await ctx.wait_for_condition(  # type: ignore[no-any-return]
        check_job,
        {"checks": 0},
        wait_strategy=poll_until(lambda s: s["checks"] >= 3, every=timedelta(seconds=30)),
    )


async def test_wait_for_condition_polls_durably(fake_env: TestEnvironment) -> None:
    polls.clear()
    run = await fake_env.run(condition)
    for _ in range(2):
        assert run.status == RunStatus.SUSPENDED
        await fake_env.advance(30)
        run = await fake_env.resume(run)
    assert await fake_env.result(run) == {"checks": 3}
    assert polls == [0, 1, 2]  # each check ran once, state carried through the journal


def test_wait_decision_helpers() -> None:
    assert not WaitDecision.stop().should_continue
    assert WaitDecision.continue_after(timedelta(seconds=3)).delay == timedelta(seconds=3)
